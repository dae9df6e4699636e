"""Approvals for risky tools: allow once, allow for the session, or deny.

`Approvals` is the policy the loop consults. It asks through a function given by the UI
(the TUI shows a card and waits for a click; the CLI has no one to ask, so without `--yes`
every risky call is denied and the model is told). `Pending` is the hand-off for a UI
whose answer comes from another thread: the agent thread waits, the UI resolves.
"""

import threading
from typing import Callable

from .events import ApprovalNeeded

ALLOW_ONCE = "allow_once"
ALLOW_SESSION = "allow_session"
DENY = "deny"
DECISIONS = (ALLOW_ONCE, ALLOW_SESSION, DENY)


class Approvals:
    def __init__(self, ask: Callable[[ApprovalNeeded], str] | None = None, allow_all: bool = False):
        self.ask = ask
        self.allow_all = allow_all
        self.session: set[str] = set()  # tool names allowed for the rest of the session
        self._lock = threading.Lock()

    def decide(self, request: ApprovalNeeded) -> tuple[str, str]:
        """(decision, source): source is "--yes", "session", "user" or "policy" (no one to ask)."""
        name = request.call.name
        if self.allow_all:
            return ALLOW_ONCE, "--yes"
        with self._lock:
            if name in self.session:
                return ALLOW_SESSION, "session"
        if self.ask is None:
            return DENY, "policy"
        decision = self.ask(request)
        if decision not in DECISIONS:
            decision = DENY
        if decision == ALLOW_SESSION:
            with self._lock:
                self.session.add(name)
        return decision, "user"


class Pending:
    """One approval question answered from another thread (e.g. a Textual button handler)."""

    def __init__(self, request: ApprovalNeeded):
        self.request = request
        self._answer: str | None = None
        self._event = threading.Event()

    def resolve(self, decision: str) -> None:
        if decision not in DECISIONS:
            raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
        self._answer = decision
        self._event.set()

    def wait(self, timeout: float | None = None) -> str:
        """The decision; DENY when none came within `timeout` seconds."""
        if not self._event.wait(timeout):
            return DENY
        return self._answer or DENY
