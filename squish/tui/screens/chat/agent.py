"""The chat screen's agent mode: a task runs the agent loop in a thread worker (squish/tui/agent_run.py)
that posts its events; they become step cards in the conversation."""

from ....agent.approval import DENY
from ....agent.loop import AgentConfig
from ...agent_run import AgentAsk, AgentEvent, AgentFinished, AgentRun
from ...widgets.agent_cards import ApprovalPrompt
from ...widgets.message import ChatMessage


class AgentMode:
    """ChatScreen's part for agent mode (mixin of ChatScreen)."""

    def on_unmount(self) -> None:
        self.agent_tools.close()  # every MCP server process stops with the screen

    async def send_task(self, task: str) -> None:
        chat = self.ensure_chat()
        self.history.add_message(chat.id, "user", task)
        self.model_bar.show_title(self.history.chat(chat.id).title)
        config = AgentConfig(temperature=self.temperature, answer_tokens=self.max_tokens)
        self.agent_run = AgentRun(self, self.engine, self.agent_tools, self.model_info, config)
        await self.conversation.mount_all([ChatMessage("user", task), self.agent_run.log])
        self.conversation.scroll_end(animate=False)
        self.stats_panel.set_state("agent working")
        self.agent_run.start(task, list(self.context))
        self.context.append({"role": "user", "content": task})

    def on_agent_event(self, message: AgentEvent) -> None:
        message.log.add_event(message.event)
        replied = getattr(message.event, "decode_tps", None)
        if replied:
            self.stats_panel.show_turn(None, replied, None)
        self.conversation.scroll_end(animate=False)

    def on_agent_ask(self, message: AgentAsk) -> None:
        if self.agent_run is None or self.agent_run.cancelled:
            message.pending.resolve(DENY)  # Esc came before the question reached the screen
            return
        message.log.ask(message.pending)
        self.conversation.scroll_end(animate=False)

    def on_approval_prompt_decided(self, _message: ApprovalPrompt.Decided) -> None:
        self.prompt.focus()

    async def on_agent_finished(self, message: AgentFinished) -> None:
        result = message.result
        if message.error:
            self.notify(message.error, title="agent failed", severity="error")
        elif result.text:
            steps = len(result.transcript.steps)
            await self.conversation.mount(ChatMessage("assistant", result.text, f"agent · {steps} step(s)"))
            if self.chat is not None:
                self.history.add_message(self.chat.id, "assistant", result.text, "stop")
            self.context.append({"role": "assistant", "content": result.text})
            self.last_answer = result.text
        elif result.reason == "cancelled":
            self.notify("agent stopped", severity="warning")
        else:
            self.notify(result.message, title=f"agent stopped: {result.reason}", severity="warning")
        self.conversation.scroll_end(animate=False)
        self.stats_panel.set_state("ready" if self.model_info else "no model")
        self.agent_run = None  # last: `busy` holds until the run is recorded
        self.prompt.focus()
