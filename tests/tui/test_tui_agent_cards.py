"""The agent step cards, mounted in a tiny host app and driven with Pilot."""

import asyncio
import threading

from textual.app import App, ComposeResult
from textual.widgets import Button, Static

from squish.agent.approval import ALLOW_ONCE, ALLOW_SESSION, DENY, Approvals, Pending
from squish.agent.events import (
    Answer,
    ApprovalGiven,
    ApprovalNeeded,
    CallProposed,
    ModelReplied,
    ModelText,
    Retrying,
    StepStarted,
    Stopped,
    ToolCall,
    ToolFinished,
    Validated,
)
from squish.tui.widgets.agent_cards import AgentLog, ApprovalPrompt, CallView, ResultView, StepCard, truncate


class Host(App):
    def __init__(self):
        super().__init__()
        self.decided = []

    def compose(self) -> ComposeResult:
        yield AgentLog()

    def on_approval_prompt_decided(self, message: ApprovalPrompt.Decided) -> None:
        self.decided.append((message.call_id, message.decision))


async def wait_until(pilot, predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await pilot.pause(0.02)


def plain(widget: Static) -> str:
    return str(widget.content)


CALL = ToolCall("s1c1", "list_dir", {"path": "."})


async def test_a_step_card_shows_call_validation_retry_result_and_timing():
    app = Host()
    async with app.run_test(size=(100, 50)) as pilot:
        log = app.query_one(AgentLog)
        for event in (
            StepStarted(1),
            ModelText(1, "<tool_call>[{"),
            ModelReplied(1, 0, "bad", 1500.0, 8.0, "stop", True),
            Retrying(1, 1, "the tool call is not valid JSON", 0.6, 99),
            ModelReplied(1, 1, "good", 1200.0, 8.0, "stop", True),
            CallProposed(1, CALL),
            Validated(1, "s1c1", True),
            ToolFinished(1, "s1c1", "list_dir", True, "README.md\nnotes.txt\nsrc/", 2.0),
            Answer(1, "Three entries."),
            Stopped("answer", "answered"),
        ):
            log.add_event(event)
        await pilot.pause()
        card = app.query_one(StepCard)
        title = plain(card.query_one(".step-title", Static))
        assert title == "Step 1 · model 2.7 s · tools 2 ms"
        view = card.query_one(CallView)
        assert plain(view.query_one(".call-name", Static)) == "▸ list_dir"
        assert '"path": "."' in str(view.query_one(".call-args", Static).content.code)
        assert "✓" in plain(view.query_one(".validation", Static))
        assert "retry 1 (temperature 0.6): the tool call is not valid JSON" in plain(card.query_one(".retry", Static))
        result = card.query_one(ResultView)
        assert result.collapsed and result.title == "✓ list_dir · 3 line(s) · 2 ms"
        assert not card.query_one(".live", Static).display
        assert "answer: answered" in plain(log.query_one(".stopped", Static))


async def test_invalid_call_and_failed_result_are_marked():
    app = Host()
    async with app.run_test(size=(100, 40)) as pilot:
        log = app.query_one(AgentLog)
        log.add_event(StepStarted(1))
        log.add_event(CallProposed(1, ToolCall("s1c1", "read_file", {"path": 7})))
        log.add_event(Validated(1, "s1c1", False, ("read_file arguments at 'path': 7 is not of type 'string'",)))
        log.add_event(ToolFinished(1, "s1c1", "read_file", False, "'x' does not exist", 1.0))
        log.add_event(Stopped("invalid", "no valid call"))
        await pilot.pause()
        validation = app.query_one(".validation", Static)
        assert validation.has_class("invalid") and "7 is not of type 'string'" in plain(validation)
        result = app.query_one(ResultView)
        assert not result.collapsed and result.has_class("error")
        assert app.query_one(".stopped", Static).has_class("failed")


async def test_result_is_collapsible_and_truncated():
    output = "\n".join(f"line {i}" for i in range(100))
    app = Host()
    async with app.run_test(size=(100, 60)) as pilot:
        log = app.query_one(AgentLog)
        log.add_event(StepStarted(1))
        log.add_event(ToolFinished(1, "s1c1", "read_file", True, output, 3.0))
        await pilot.pause()
        result = app.query_one(ResultView)
        assert result.collapsed
        await pilot.click("#result-s1c1 CollapsibleTitle")
        await wait_until(pilot, lambda: not result.collapsed)
        body = plain(result.query_one(".result-body", Static))
        assert body.startswith("line 0\n") and "line 39" in body and "line 40" not in body
        assert body.endswith("… 60 more line(s) not shown")
    assert truncate("short") == "short"


async def test_approval_prompt_with_diff_preview_allow_once_by_click():
    preview = "--- a/notes.txt\n+++ b/notes.txt\n@@ -1 +1 @@\n-buy milk\n+buy bread\n"
    request = ApprovalNeeded(1, ToolCall("s1c1", "edit_file", {"path": "notes.txt"}), preview)
    app = Host()
    async with app.run_test(size=(100, 50)) as pilot:
        log = app.query_one(AgentLog)
        log.add_event(StepStarted(1))
        log.add_event(request)
        await pilot.pause()
        prompt = app.query_one(ApprovalPrompt)
        assert all(b.disabled for b in prompt.query(Button))  # nobody is waiting yet
        assert prompt.query_one(".preview", Static).content.lexer.name == "Diff"
        pending = Pending(request)
        log.ask(pending)
        await pilot.pause()
        assert not any(b.disabled for b in prompt.query(Button))
        await pilot.click(f"#approval-s1c1 #{ALLOW_ONCE}")
        await wait_until(pilot, lambda: app.decided)
        assert pending.wait(0) == ALLOW_ONCE
        assert app.decided == [("s1c1", ALLOW_ONCE)]
        log.add_event(ApprovalGiven(1, "s1c1", ALLOW_ONCE, "user"))
        await pilot.pause()
        assert plain(prompt.query_one(".decision", Static)) == "allowed once (you)"


async def test_approval_by_keys_and_shell_preview():
    request = ApprovalNeeded(2, ToolCall("s2c1", "run_shell", {"command": "ls"}), "$ ls\n(in /tmp, timeout 30 s)")
    app = Host()
    async with app.run_test(size=(100, 50)) as pilot:
        log = app.query_one(AgentLog)
        log.add_event(StepStarted(1))
        log.add_event(StepStarted(2))
        pending = Pending(request)
        log.ask(pending)  # ask before the ApprovalNeeded event: the prompt is mounted by ask
        await wait_until(pilot, lambda: app.query(ApprovalPrompt) and app.focused is app.query_one(ApprovalPrompt))
        assert app.query_one(ApprovalPrompt).query_one(".preview", Static).content.lexer.name == "Bash"
        await pilot.press("s")
        await wait_until(pilot, lambda: app.decided)
        assert pending.wait(0) == ALLOW_SESSION


async def test_escape_style_abort_denies_open_prompts():
    request = ApprovalNeeded(1, ToolCall("s1c1", "write_file", {"path": "a"}), "--- a/a\n+++ b/a\n")
    app = Host()
    async with app.run_test(size=(100, 40)) as pilot:
        log = app.query_one(AgentLog)
        pending = Pending(request)
        log.ask(pending)
        await pilot.pause()
        log.deny_pending()
        assert pending.wait(0) == DENY


async def test_agent_thread_waits_for_the_card():
    """The wiring the app uses: the agent thread asks, the card answers, the thread goes on."""
    request = ApprovalNeeded(1, ToolCall("s1c1", "run_shell", {"command": "ls"}), "$ ls")
    app = Host()
    async with app.run_test(size=(100, 40)) as pilot:
        log = app.query_one(AgentLog)

        def ask(req):
            pending = Pending(req)
            app.call_from_thread(log.ask, pending)
            return pending.wait(10)

        answers = []
        worker = threading.Thread(target=lambda: answers.append(Approvals(ask=ask).decide(request)))
        worker.start()
        await wait_until(pilot, lambda: app.query(ApprovalPrompt) and not app.query_one(f"#{DENY}", Button).disabled)
        await pilot.press("d")
        await wait_until(pilot, lambda: answers)
        worker.join(2)
        assert answers == [(DENY, "user")]


async def test_a_new_run_starts_new_cards():
    app = Host()
    async with app.run_test(size=(100, 40)) as pilot:
        log = app.query_one(AgentLog)
        for _ in range(2):
            log.add_event(StepStarted(1))
            log.add_event(CallProposed(1, CALL))
            log.add_event(Stopped("answer", "answered"))
        await pilot.pause()
        assert len(app.query(StepCard)) == 2 and len(app.query(CallView)) == 2
