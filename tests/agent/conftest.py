"""Fixtures for the agent tests: scripted runs (tests/helpers.py's ScriptedEngine), a workspace."""

import threading

import pytest
from helpers import HANG, NO_CALL, ScriptedEngine, call


@pytest.fixture
def workspace(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "README.md").write_text("# Demo\nhello world\n")
    (root / "notes.txt").write_text("buy milk\n")
    (root / "src").mkdir()
    (root / "src" / "main.py").write_text("print('hello')\n")
    return root


class Run:
    """A scripted agent run: the agent, its scripted engine, and every event it emitted."""

    def __init__(
        self, workspace, replies, template_tools=False, ask=None, allow_all=False, tools=None, scores=None, **config
    ):
        from squish.agent.approval import Approvals
        from squish.agent.loop import Agent, AgentConfig
        from squish.agent.sandbox import Workspace
        from squish.agent.tools import Registry, ToolContext, builtin_tools

        self.engine = ScriptedEngine(*replies, scores=scores)
        self.events = []
        self.arrived = threading.Condition()  # notified on every event, for wait_for
        self.context = ToolContext(Workspace(workspace), shell_timeout_s=config.pop("shell_timeout_s", 5.0))
        call_format = config.pop("call_format", "json_tools")
        self.agent = Agent(
            self.engine,
            Registry(tools if tools is not None else builtin_tools()),
            self.context,
            Approvals(ask=ask, allow_all=allow_all),
            # Routing scores names with the model: off unless a test scripts the scores.
            AgentConfig(**{"seed": 1234, "route": "off" if scores is None else "both", **config}),
            template_tools=template_tools,
            on_event=self.record,
            call_format=call_format,
        )

    def record(self, event) -> None:
        with self.arrived:
            self.events.append(event)
            self.arrived.notify_all()

    def wait_for(self, kind, timeout: float = 20.0):
        """Block until the run has emitted an event of `kind` (from another thread); returns it."""
        with self.arrived:
            assert self.arrived.wait_for(lambda: self.of(kind), timeout), f"no {kind.__name__} event"
            return self.of(kind)[0]

    def __call__(self, task="do the task"):
        self.result = self.agent.run(task)
        return self.result

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


@pytest.fixture
def scripted(workspace):
    """scripted(reply, reply, ..., **options) -> Run; call the Run with the task."""
    return lambda *replies, **options: Run(workspace, replies, **options)


@pytest.fixture
def tool_call():
    return call


@pytest.fixture
def no_call():
    return NO_CALL


@pytest.fixture
def hang():
    return HANG


@pytest.fixture(scope="module")
def model_home(request):
    """The suite's temp squish home when the shared fixtures provide one, else None ($SQUISH_HOME)."""
    try:
        return request.getfixturevalue("home")
    except pytest.FixtureLookupError:
        return None


@pytest.fixture(scope="module")
def model_engine(request):
    """An engine with the real embedded model: the suite's shared one when there is one."""
    try:
        yield request.getfixturevalue("engine")
        return
    except pytest.FixtureLookupError:
        pass
    from squish.engine.engine import Engine
    from squish.models import store

    engine = Engine()
    loaded = store.load(engine, None).collect()
    assert loaded.error is None, loaded.error
    yield engine
    engine.shutdown()
