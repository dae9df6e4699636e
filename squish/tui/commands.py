"""Slash commands: their names, arguments and help. The chat screen runs them."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    args: str  # shown in help; "" takes none, "<x>" needs one, "[x]" may take one
    help: str

    @property
    def usage(self) -> str:
        return f"/{self.name} {self.args}".rstrip()


COMMANDS = {
    command.name: command
    for command in [
        Command("help", "", "keys and commands"),
        Command("new", "", "start a new chat (the current one stays in /chats)"),
        Command("chats", "", "saved chats: resume, rename, delete"),
        Command("model", "", "switch model: local ones, or download one from the catalog"),
        Command("system", "<text>", "set this chat's system prompt (/system alone shows it)"),
        Command("clear", "", "forget this chat's messages, context and saved KV cache"),
        Command("compact", "", "replace older turns, for the model, with a summary it writes (the history keeps them)"),
        Command("ctx", "[tokens]", "the context size (remembered); /ctx alone shows it"),
        Command("think", "[on|off]", "thinking models: think first or not (templates with enable_thinking)"),
        Command("export", "[path]", "save this chat as Markdown (default: ./squish-chat-<id>.md)"),
        Command("copy", "", "copy the last answer to the clipboard"),
        Command("stats", "", "details of the last answer and this chat"),
        Command("agent", "", "agent mode on/off: the model uses tools in the current folder, step by step"),
        Command("tools", "", "the agent's tools: name, risk, where from (built-in, MCP server), what each does"),
        Command("undo", "[N] [force]", "revert the file changes of the last agent run (or the last N), with the diff"),
        Command("quit", "", "leave squish (also Ctrl+Q)"),
    ]
}


class CommandError(Exception):
    pass


def parse(text: str) -> tuple[Command, str]:
    """('/name rest') -> (command, rest); raises CommandError with a line for the user."""
    head, _, rest = text.strip().partition(" ")
    name = head[1:].lower()
    command = COMMANDS.get(name)
    if command is None:
        raise CommandError(f"unknown command {head!r}: /help lists the commands")
    rest = rest.strip()
    if rest and not command.args:
        raise CommandError(f"{command.usage} takes no argument")
    return command, rest


def is_command(text: str) -> bool:
    """A line starting with one '/' is a command; '//' sends a literal '/' to the model."""
    stripped = text.lstrip()
    return stripped.startswith("/") and not stripped.startswith("//")


HELP = "\n".join(
    [
        "# squish",
        "",
        "## Keys",
        "",
        "| key | does |",
        "| --- | --- |",
        "| Enter | send |",
        "| Shift+Enter, Ctrl+J | new line |",
        "| Up / Down (first / last line) | earlier / later prompts |",
        "| Esc | stop the answer (the partial answer is kept), or the agent run |",
        "| a / s / d (approval card) | allow once / allow for this session / deny a risky tool |",
        "| Ctrl+N / Ctrl+L / F1 | new chat / saved chats / this help |",
        "| Ctrl+P | command palette |",
        "| Ctrl+Q | quit |",
        "",
        "## Commands",
        "",
        "| command | does |",
        "| --- | --- |",
        *(f"| `{c.usage}` | {c.help} |" for c in COMMANDS.values()),
        "",
        "Start a message with `//` to send a line that begins with `/`.",
    ]
)
