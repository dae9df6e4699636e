"""The chat screen's slash commands (/help, /new, /chats, /model, ...): `command_<name>` each."""

from pathlib import Path

from ....history import HistoryError
from ....models.inventory import PickerRow, picker_rows
from ... import commands
from ...agent_run import tools_markdown, undo_markdown
from ...transcript import export_markdown, stats_markdown
from ..chats import ChatsScreen
from ..info import InfoScreen
from ..models import ModelScreen

CHAT_PLACEHOLDER = "Ask anything · /help for commands"
AGENT_PLACEHOLDER = "Agent mode: give a task (tools work in the current folder) · /agent leaves"


class SlashCommands:
    """ChatScreen's part that runs slash commands (mixin of ChatScreen)."""

    def refuse_while_busy(self, name: str) -> bool:
        if self.busy:
            self.notify(f"/{name} waits for the answer: Esc stops it.", severity="warning")
        return self.busy

    async def action_command(self, name: str) -> None:
        await self.run_command(f"/{name}")

    async def run_command(self, text: str) -> None:
        try:
            command, argument = commands.parse(text)
        except commands.CommandError as exc:
            self.notify(str(exc), severity="error")
            return
        self.prompt.clear()
        try:
            await getattr(self, f"command_{command.name}")(argument)
        except HistoryError as exc:
            self.notify(str(exc), severity="error")

    async def command_help(self, _argument: str) -> None:
        self.app.push_screen(InfoScreen(commands.HELP))

    async def command_new(self, _argument: str) -> None:
        if not self.refuse_while_busy("new"):
            await self.show_chat(None)
            self.notify("new chat")

    async def command_chats(self, _argument: str) -> None:
        if self.refuse_while_busy("chats"):
            return

        async def chosen(chat_id: int | None) -> None:
            if self.chat is not None and self.history.chat(self.chat.id) is None:
                await self.show_chat(None)  # the current chat was deleted
            if chat_id is not None:
                await self.show_chat(self.history.chat(chat_id))
            elif self.chat is not None:
                self.model_bar.show_title(self.history.chat(self.chat.id).title)

        current = self.chat.id if self.chat else None
        self.app.push_screen(ChatsScreen(self.history, current), chosen)

    async def command_model(self, _argument: str) -> None:
        if self.refuse_while_busy("model"):
            return

        def chosen(row: PickerRow | None) -> None:
            if row is None:
                return
            if row.ready:
                self.switch_model(row.target)
            else:
                self.pull_model(row.name)

        current = self.model_info.name if self.model_info else self.model_name
        self.app.push_screen(ModelScreen(picker_rows(self.home, self.hw, self.hf_cache), current), chosen)

    async def command_system(self, argument: str) -> None:
        if not argument:
            shown = self.system_prompt or "(none: the model's default)"
            self.notify(shown, title="system prompt")
            return
        chat = self.ensure_chat()
        self.history.set_system_prompt(chat.id, argument)
        self.system_prompt = argument
        self.notify("system prompt set for this chat")

    async def command_clear(self, _argument: str) -> None:
        if self.refuse_while_busy("clear"):
            return
        if self.chat is not None:
            self.history.clear_messages(self.chat.id)
            self.forget_cache(self.chat)
        await self.conversation.remove_children()
        self.context = []
        self.last_answer = ""
        self.notify("cleared this chat's messages")

    async def command_export(self, argument: str) -> None:
        messages = self.history.messages(self.chat.id) if self.chat else []
        if not messages:
            self.notify("nothing to export yet", severity="warning")
            return
        path = Path(argument or f"squish-chat-{self.chat.id}.md").expanduser()
        try:
            with path.open("x", encoding="utf-8") as handle:
                handle.write(export_markdown(self.history.chat(self.chat.id), messages))
        except FileExistsError:
            self.notify(f"{path} exists; not overwritten", title="export failed", severity="error")
        except OSError as exc:
            self.notify(f"cannot write {path}: {exc.strerror or exc}", title="export failed", severity="error")
        else:
            self.notify(f"saved {path.resolve()}")

    async def command_copy(self, _argument: str) -> None:
        if not self.last_answer:
            self.notify("no answer to copy yet", severity="warning")
            return
        self.app.copy_to_clipboard(self.last_answer)
        self.notify(f"copied the last answer ({len(self.last_answer)} characters)")

    async def command_stats(self, _argument: str) -> None:
        self.app.push_screen(InfoScreen(stats_markdown(self.model_info, self.last_stats, self.turns, self.last_memory)))

    async def command_agent(self, _argument: str) -> None:
        if self.refuse_while_busy("agent"):
            return
        self.agent_mode = not self.agent_mode
        self.prompt.placeholder = AGENT_PLACEHOLDER if self.agent_mode else CHAT_PLACEHOLDER
        self.model_bar.show_mode("agent" if self.agent_mode else "")
        if self.agent_mode:
            self.notify(f"agent mode: tools work in {self.agent_tools.workspace.root} (/tools lists them)")
        else:
            self.notify("chat mode")

    async def command_tools(self, _argument: str) -> None:
        tools = self.agent_tools

        def listing() -> None:  # a worker: the first time, MCP servers start (seconds)
            problems = tools.connect()
            text = tools_markdown(tools.registry, tools.workspace.root, problems)
            self.app.call_from_thread(self.app.push_screen, InfoScreen(text))

        self.run_worker(listing, thread=True, group="tools", exit_on_error=False)

    async def command_undo(self, argument: str) -> None:
        if self.refuse_while_busy("undo"):
            return
        words = argument.split()
        force = "force" in words
        counts = [w for w in words if w != "force"]
        if len(counts) > 1 or (counts and not (counts[0].isdigit() and int(counts[0]) > 0)):
            self.notify("usage: /undo [N] [force]", severity="warning")
            return
        result = self.agent_tools.undo.undo(int(counts[0]) if counts else 1, force=force)
        self.app.push_screen(InfoScreen(undo_markdown(result, not force)))

    async def command_quit(self, _argument: str) -> None:
        self.app.exit()
