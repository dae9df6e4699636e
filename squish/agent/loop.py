"""The agent loop: ask the model, read its tool calls, check them, run them, feed the results back.

Two ways to prompt, chosen by the model's chat template:
- the template renders `tools=` (Qwen, Llama 3.1): the model answers or calls when it likes;
  constrained decoding starts when it writes `<tool_call>`; a reply without a call is the answer.
- it does not (SmolLM2): squish's own system section asks for SmolLM2's trained format, every
  reply is a constrained `<tool_call>[...]</tool_call>` list, and `[]` (or a read-only call the
  model already made, whose result it has) means "done": squish then asks for the answer in a
  short prompt that puts the tool results before the task, which small models can follow.

Every step is reported as events (squish.agent.events). The loop never raises for what the
model or a tool does: malformed calls get corrective retries, tool failures go back to the
model, and the run ends with a `Stopped` event saying why.
"""

import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from . import choose, constrain, grammar, prompt
from .approval import ALLOW_ONCE, ALLOW_SESSION, Approvals
from .events import (
    Answer,
    ApprovalGiven,
    ApprovalNeeded,
    CallProposed,
    ModelReplied,
    ModelText,
    Notice,
    Retrying,
    StepStarted,
    Stopped,
    ToolCall,
    ToolChosen,
    ToolFinished,
    Transcript,
    Validated,
)
from .parser import CLOSE, OPEN, ParsedReply, parse
from .sandbox import Call, ToolError, cap
from .tools import RISKY, Registry, ToolContext

log = logging.getLogger("squish.agent")

ANSWER_SYSTEM = "Answer the user's question from the information given. Be brief."


@dataclass
class AgentConfig:
    max_steps: int = 8
    max_retries: int = 2  # corrective retries per step
    repeat_limit: int = 3  # the same call this many times stops the loop
    tool_timeout_s: float = 30.0
    call_tokens: int = 512  # the most tokens of a reply that may hold tool calls (a call ends earlier)
    answer_tokens: int = 400
    temperature: float = 0.2
    top_p: float = 0.95
    seed: int | None = None
    constrained: bool = True
    execute: bool = True  # False: propose validated calls and run nothing (--no-exec)
    request_timeout_s: float = 300.0
    # Compensations for small models, in squish's own call format (docs/agent.md has the measurements).
    route: str = "both"  # choose the tool first (squish.agent.choose): off, model, words or both
    copy_args: bool = True  # string arguments are pieces of the user's words or tool results ("." for a path)
    bounds: bool = True  # bounded strings, runaway strings ended, a call's tokens bounded by its schema
    single_call: bool = True  # one call per reply unless the request names several things
    clean_retry: bool = True  # a retry starts from the clean context plus the correction


@dataclass
class AgentResult:
    text: str  # the answer; empty when the run stopped without one
    reason: str  # Stopped.reason
    message: str
    transcript: Transcript
    seed: int
    tool_calls: list[dict] = field(default_factory=list)  # validated calls, {"name", "arguments"}
    changed_files: list[str] = field(default_factory=list)  # recorded for undo, relative to the workspace

    def public(self) -> dict:
        return {
            "text": self.text,
            "stop_reason": self.reason,
            "message": self.message,
            "steps": [step.public() for step in self.transcript.steps],
            "notices": self.transcript.notices,
            "changed_files": self.changed_files,
            "seed": self.seed,
        }


class Abort(Exception):
    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message


SEVERAL = re.compile(r"\b(and|both|each|every)\b", re.IGNORECASE)  # a request that may need several calls
# ... and one that surely does: the same preposition again after "and" ("in Rome and in Oslo").
REPEATED = re.compile(r"\b(in|for|at|to|from|on|of|with)\b[^,.;:?!]*?\band\s+\1\b", re.IGNORECASE)


def unique(calls: list[dict]) -> list[dict]:
    """The calls without repeats (a small model often writes the same call twice)."""
    seen, kept = set(), []
    for call in calls:
        key = json.dumps([call.get("name"), call.get("arguments")], sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            kept.append(call)
    return kept


def canonical(call: dict) -> str:
    return json.dumps([call["name"], call["arguments"]], sort_keys=True, ensure_ascii=False)


def describe(call: dict) -> str:
    args = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in call["arguments"].items())
    return f"{call['name']}({args})"


class Agent:
    """One agent conversation. `run` blocks; call it from a worker thread in a UI."""

    def __init__(
        self,
        engine,
        registry: Registry,
        context: ToolContext,
        approvals: Approvals | None = None,
        config: AgentConfig | None = None,
        template_tools: bool = False,
        on_event: Callable | None = None,
        session: str | None = None,
        undo=None,
        call_format: str = "json_tools",
    ):
        if not len(registry):
            raise ValueError("the agent needs at least one tool")
        self.engine = engine
        self.registry = registry
        self.context = context
        self.approvals = approvals or Approvals()
        self.config = config or AgentConfig()
        self.template_tools = template_tools
        self.on_event = on_event
        self.undo = undo  # an UndoLog: file changes are recorded so `squish undo` can revert them
        self.recorder = None
        self.tools = list(registry)
        self.system = prompt.system_prompt(self.tools, template_tools)
        # The engine keeps this conversation's KV cache between steps. A caller-given session
        # outlives the run (runs that share squish's system prompt then skip its prefill).
        self.session = session or f"agent-{id(self):x}"
        self.own_session = session is None
        self._cancel = threading.Event()
        self._stream = None
        self._call: Call | None = None  # the tool call running now
        self._stream_lock = threading.Lock()  # guards _stream and _call
        # The model family's call syntax: squish's own (SmolLM2), or the template's (an mlx-lm parser name).
        self.form = call_format if template_tools else "squish"
        self.constraint_problem = ""
        if self.config.constrained:
            if self.form not in grammar.FORMS:
                self.constraint_problem = f"there is no grammar for the {self.form} call format yet"
            elif problem := constrain.check(self.tools, self.form):
                self.constraint_problem = f"llguidance cannot use these schemas ({problem})"
        self.router = None
        if self.config.route != "off" and not template_tools:
            self.router = choose.Router(engine, self.tools, session=f"{self.session}-route")

    # Control from other threads.

    def cancel(self) -> None:
        """Abort the run: the current generation stops within a token; the running tool call is
        stopped (its shell processes killed, a file change not yet made never made)."""
        self._cancel.set()
        with self._stream_lock:
            if self._stream is not None:
                self._stream.cancel()
            call = self._call
        if call is not None:
            call.close()

    # The run.

    def run(self, task: str, history: list[dict] = ()) -> AgentResult:
        """Work on `task`; `history` holds earlier user/assistant turns of the conversation."""
        self.transcript = Transcript()
        self.seed = self.config.seed if self.config.seed is not None else random.randrange(2**31)
        self.task = task
        self.results: list[tuple[dict, bool, str]] = []  # (call, ok, output) of every executed call
        self.counts: dict[str, int] = {}
        self.executed: dict[str, int] = {}  # canonical call -> self.changes when it last ran
        self.changes = 0  # risky calls run so far: a repeat after one may see a new state
        self.proposed: list[dict] = []
        self.recorder = self.undo.begin(task) if self.undo is not None else None
        if any(m.get("role") not in ("user", "assistant") for m in history):
            raise ValueError("history may hold only user and assistant turns: the system prompt is squish's")
        self.history_text = [m["content"] for m in history if m.get("role") == "user"]
        messages = [{"role": "system", "content": self.system}]
        messages += [{"role": m["role"], "content": prompt.neutralize(m["content"])} for m in history]
        messages.append({"role": "user", "content": prompt.neutralize(task)})
        if self.constraint_problem:
            self.emit(
                Notice(
                    0, f"constrained decoding is off: {self.constraint_problem}; calls are still validated and retried"
                )
            )
        try:
            answer = self._loop(messages)
            if answer is None:
                reason, message = "proposed", f"{len(self.proposed)} tool call(s) proposed, none run (--no-exec)"
            else:
                reason, message = "answer", "answered"
        except Abort as stop:
            answer, reason, message = None, stop.reason, stop.message
        except Exception as exc:  # a bug must still end the run with Stopped, so a UI is not left waiting
            log.exception("agent run failed")
            answer, reason, message = None, "error", f"{type(exc).__name__}: {exc}"
        finally:
            if self.own_session:
                # Waited for: a process that exits while the engine frees MLX arrays aborts.
                self.engine.drop_session(self.session).collect()
        self.emit(Stopped(reason, message))
        changed = self.recorder.changed if self.recorder is not None else []
        return AgentResult(answer or "", reason, message, self.transcript, self.seed, self.proposed, changed)

    def emit(self, event) -> None:
        self.transcript.add(event)
        if self.on_event is not None:
            self.on_event(event)

    def _loop(self, messages: list[dict]) -> str | None:
        for step in range(1, self.config.max_steps + 1):
            self.emit(StepStarted(step))
            raw, reply, ids = self._reply_with_valid_calls(step, messages)
            calls = reply.calls
            if not self.config.execute:
                self.proposed = calls
                return None
            if not calls:
                return self._final(step, reply.text) if self.template_tools else self._answer(step, reply.text)
            stale = self._check_repeats(step, calls)
            if stale:
                self.emit(
                    Notice(step, f"{stale} repeats a call whose result the model already has; asking for the answer")
                )
                return self._answer(step, "")
            messages.append(prompt.assistant_call_message(raw, calls, self.template_tools))
            for call_id, call in zip(ids, calls):
                ok, output = self._execute(step, call_id, call)
                messages.append(prompt.tool_result_message(call["name"], output, ok, self.template_tools))
        raise Abort(
            "max_steps",
            f"stopped after {self.config.max_steps} steps without a final answer (raise it with --max-steps)",
        )

    # Model replies.

    def _plan(self, step: int) -> dict:
        """Which tools this reply may call, how many calls, and what the router chose."""
        several = bool(SEVERAL.search(self.task))
        plan = {
            "tools": self.tools,
            # The first reply of an agent run must call a tool (a small model asked to act would
            # otherwise often answer from nothing); later ones may be [] ("done").
            "min_calls": int(step == 1 or not self.config.execute),
            "max_calls": grammar.MAX_CALLS if several or not self.config.single_call else 1,
            "choice": None,
        }
        if self.router is None or step != 1:
            return plan
        try:
            choice = self.router.choose(self.task, self.config.route)
        except Exception as exc:  # the router is a help: without it the model chooses by itself
            self.emit(Notice(step, f"the tool could not be chosen first ({exc}); the model chooses"))
            return plan
        self.emit(ToolChosen(step, choice.name, choice.ranking, choice.mode))
        plan["choice"] = choice
        if choice.name is None:
            plan.update(tools=[], min_calls=0)
        else:
            twice = self.config.single_call and REPEATED.search(self.task)
            plan.update(tools=[self.registry.get(choice.name)], min_calls=2 if twice else 1)
        return plan

    def _reply_with_valid_calls(self, step: int, messages: list[dict]) -> tuple[str, ParsedReply, list[str]]:
        """The reply (raw, parsed) with valid calls and their ids, after at most max_retries retries."""
        plan = self._plan(step)
        if not plan["tools"] and plan["min_calls"] == 0 and self.router is not None and step == 1:
            return "", ParsedReply(""), []  # the router found no tool needed
        attempt_messages = list(messages)
        for attempt in range(self.config.max_retries + 1):
            temperature, seed = self._sampling(attempt)
            text, finish, limit = self._generate(step, attempt, attempt_messages, temperature, seed, plan)
            reply = parse(text, self.form, [t.openai() for t in self.tools])
            reply.calls = unique(reply.calls)
            problems = []
            if reply.error:
                problems.append(reply.error)
            elif finish == "length" and (reply.opened_call or OPEN in text):
                # The parser can close cut-off JSON, but a cut-off argument is not what the model meant.
                problems.append(f"the reply reached the limit of {limit} tokens inside the tool call")
            ids = []
            for index, call in enumerate(reply.calls, 1):
                call_id = f"s{step}c{index}" if attempt == 0 else f"s{step}r{attempt}c{index}"
                ids.append(call_id)
                self.emit(CallProposed(step, ToolCall(call_id, call["name"], call["arguments"])))
                errors = self._validate(call)
                self.emit(Validated(step, call_id, not errors, tuple(errors)))
                problems += errors
            if not problems:
                if not self.config.clean_retry:
                    messages[:] = attempt_messages  # failed replies and corrections stay in the context
                return text, reply, ids
            reason = "; ".join(problems)
            if attempt == self.config.max_retries:
                raise Abort(
                    "invalid",
                    f"the model made no valid tool call after {self.config.max_retries} corrective retries: {reason}",
                )
            next_temperature, next_seed = self._sampling(attempt + 1)
            self.emit(Retrying(step, attempt + 1, reason, next_temperature, next_seed))
            likely = self._likely_tool(plan, reply.calls)
            correction = {"role": "user", "content": prompt.correction(reason, self.tools, likely)}
            if self.config.clean_retry:
                # The failed reply stays out: a runaway fed back is a runaway written again.
                attempt_messages = list(messages) + [correction]
            else:
                attempt_messages += [{"role": "assistant", "content": prompt.neutralize(text)}, correction]
        raise AssertionError("unreachable")

    def _likely_tool(self, plan: dict, calls: list[dict]) -> str | None:
        """The tool the correction names: the router's choice, else its runner-up, else none."""
        choice = plan["choice"]
        if choice is None:
            return None
        if choice.name and not any(c["name"] != choice.name for c in calls):
            return choice.name
        return choice.runner_up

    def _sampling(self, attempt: int) -> tuple[float, int]:
        """A retry changes sampling: a blind greedy retry would write the same reply again."""
        if attempt == 0:
            return self.config.temperature, self.seed
        return round(max(self.config.temperature, 0.3) + 0.3 * attempt, 2), self.seed + 7919 * attempt

    def _validate(self, call: dict) -> list[str]:
        tool = self.registry.get(call["name"])
        if tool is None:
            return [f"unknown tool {call['name']!r}; the tools are {', '.join(self.registry.names())}"]
        if not isinstance(call["arguments"], dict):
            return [f"the arguments of {tool.name} must be a JSON object"]
        return [f"{tool.name} arguments {error}" for error in tool.errors(call["arguments"])]

    def _generate(
        self, step: int, attempt: int, messages: list[dict], temperature: float, seed: int, plan: dict
    ) -> tuple[str, str, int]:
        """(text, finish reason, token limit) of one reply."""
        from squish.engine.engine import ChatRequest

        factory = None
        limit = self.config.call_tokens
        if self.config.constrained and not self.constraint_problem and plan["tools"]:
            lazy = self.template_tools and self.config.execute
            factory = constrain.processor_factory(
                plan["tools"],
                self.form,
                plan["min_calls"],
                plan["max_calls"],
                sources=self._sources() if self.config.copy_args and not self.template_tools else (),
                copy=self.config.copy_args and not self.template_tools,
                bounds=self.config.bounds,
                lazy=lazy,
            )
            if self.config.bounds and not lazy:
                # A call cannot need more tokens than its grammar has characters.
                limit = min(limit, factory.max_chars)
        request = ChatRequest(
            messages,
            session=self.session,
            max_tokens=limit,
            temperature=temperature,
            top_p=self.config.top_p,
            seed=seed,
            stop=() if factory is not None and not self.template_tools else (CLOSE,),
            timeout_s=self.config.request_timeout_s,
            processor_factory=factory,
            template_args={"tools": [t.openai() for t in self.tools]} if self.template_tools else {},
        )
        text, stats, finish = self._stream_text(step, request)
        self.emit(ModelReplied(step, attempt, text, stats[0], stats[1], finish, factory is not None))
        for constraint in getattr(factory, "made", []):
            for why in constraint.runaways[:1]:
                self.emit(Notice(step, f"a string argument started {why}; squish closed it"))
        return text, finish, limit

    def _sources(self) -> list[str]:
        """Where copied argument values come from: the task, earlier user turns, the tool results."""
        return [self.task, *self.history_text, *(output for _, ok, output in self.results if ok)]

    def _stream_text(self, step: int, request) -> tuple[str, tuple[float, float], str]:
        from squish.engine.events import Error, Stats, Token

        if self._cancel.is_set():
            raise Abort("cancelled", "stopped by the user")
        started = time.perf_counter()
        stream = self.engine.generate(request)
        with self._stream_lock:
            self._stream = stream
        if self._cancel.is_set():  # cancel() came between the check above and now
            stream.cancel()
        parts, decode_tps, finish, error = [], 0.0, "", None
        try:
            for event in stream:
                if isinstance(event, Token):
                    parts.append(event.text)
                    self.emit(ModelText(step, event.text))
                elif isinstance(event, Stats):
                    decode_tps, finish = event.decode_tps, event.finish_reason
                elif isinstance(event, Error):
                    error = event
        finally:
            with self._stream_lock:
                self._stream = None
        if self._cancel.is_set() or finish == "cancelled":
            raise Abort("cancelled", "stopped by the user")
        if error is not None:
            raise Abort("error", f"the model failed: {error.message}")
        return "".join(parts), ((time.perf_counter() - started) * 1000, decode_tps), finish

    def _final(self, step: int, text: str) -> str:
        self.emit(Answer(step, text.strip()))
        return text.strip()

    def _answer(self, step: int, text: str) -> str:
        """SmolLM2-style: the reply was `[]`, so ask for the answer with the results before the task."""
        from squish.engine.engine import ChatRequest

        if text.strip():
            return self._final(step, text)
        if self.results:
            blocks = [f"{self._label(call, ok)}\n{output}" for call, ok, output in self.results]
            content = "\n\n".join(blocks) + f"\n\n{self.task}"
        else:
            content = self.task
        messages = [
            {"role": "system", "content": ANSWER_SYSTEM},
            {"role": "user", "content": prompt.neutralize(content)},
        ]
        request = ChatRequest(
            messages,
            max_tokens=self.config.answer_tokens,
            temperature=self.config.temperature,
            top_p=self.config.top_p,
            seed=self.seed,
            timeout_s=self.config.request_timeout_s,
        )
        answer, stats, finish = self._stream_text(step, request)
        self.emit(ModelReplied(step, -1, answer, stats[0], stats[1], finish, False))
        return self._final(step, answer)

    def _label(self, call: dict, ok: bool) -> str:
        tool = self.registry.get(call["name"])
        if not ok:
            return f"Calling {describe(call)} failed:"
        return tool.label(call["arguments"]) if tool.label else f"Result of {describe(call)}:"

    # Tool calls.

    def _check_repeats(self, step: int, calls: list[dict]) -> str:
        """Count repeats (the third identical call stops the run); return a stale repeat, if any.

        Stale: in squish's own format, every call of the reply is a read-only call the model
        already made with nothing changed since, or a change (write, edit, shell) it already
        made or tried; its result is in the conversation, so the model has nothing new to
        learn by calling and is asked for the answer instead.
        """
        for call in calls:
            key = canonical(call)
            self.counts[key] = self.counts.get(key, 0) + 1
            if self.counts[key] >= self.config.repeat_limit:
                raise Abort(
                    "repetition",
                    f"the model called {describe(call)} {self.counts[key]} times with the same arguments; "
                    "stopping instead of looping",
                )
        if self.template_tools:
            return ""
        def known(call: dict) -> bool:
            ran = self.executed.get(canonical(call))
            if self.registry.get(call["name"]).risk == RISKY:
                return ran is not None  # the same change again: made already, or failed already
            return ran == self.changes  # a read whose result is still current

        stale = [c for c in calls if known(c)]
        return describe(stale[0]) if len(stale) == len(calls) else ""

    def _execute(self, step: int, call_id: str, call: dict) -> tuple[bool, str]:
        tool = self.registry.get(call["name"])
        started = time.perf_counter()
        ok, output = False, ""
        if tool.handler is None:
            output = f"{tool.name} cannot run here: it was loaded from a schema file and has no implementation"
        elif tool.risk == RISKY and not self._approved(step, call_id, call, tool):
            output = f"the user denied this {tool.name} call; do not retry it, answer or choose another way"
        else:
            touched = self._record("before", step, tool, call["arguments"], [])
            ok, output = self._run_tool(tool, call["arguments"])
            self._record("after", step, tool, call["arguments"], touched)
            if tool.risk == RISKY:
                self.changes += 1
        output = cap(output, self.context.output_cap)
        self.executed[canonical(call)] = self.changes
        self.results.append((call, ok, output))
        self.emit(ToolFinished(step, call_id, call["name"], ok, output, (time.perf_counter() - started) * 1000))
        return ok, output

    def _record(self, moment: str, step: int, tool, arguments: dict, touched: list) -> list:
        """Undo bookkeeping around a call that changes files; a failure to record is a notice, not a stop."""
        if self.recorder is None or tool.changes is None:
            return []
        try:
            paths = touched or tool.changes(arguments, self.context)
            for path in paths:
                getattr(self.recorder, moment)(path)
            return paths
        except ToolError:
            return []  # the call itself will fail on the same path and say why
        except OSError as exc:
            self.emit(Notice(step, f"undo could not record this {tool.name} call: {exc}"))
            return []

    def _approved(self, step: int, call_id: str, call: dict, tool) -> bool:
        request = ApprovalNeeded(step, ToolCall(call_id, call["name"], call["arguments"]), "")
        if not self.approvals.allow_all and call["name"] not in self.approvals.session:
            from .tools import preview

            request = ApprovalNeeded(request.step, request.call, preview(tool, call["arguments"], self.context))
            self.emit(request)
        decision, source = self.approvals.decide(request)
        self.emit(ApprovalGiven(step, call_id, decision, source))
        if self._cancel.is_set():
            raise Abort("cancelled", "stopped by the user")
        return decision in (ALLOW_ONCE, ALLOW_SESSION)

    def _run_tool(self, tool, arguments: dict) -> tuple[bool, str]:
        """Run a handler on its own thread under the tool timeout; failures become messages.

        The call gets its own `sandbox.Call`: at the timeout (or a cancel) it is stopped, so a
        handler that is still running can change nothing any more; if its change landed first,
        the model is told what it did rather than that it failed.
        """
        outcome: list = []
        call = Call()
        context = replace(self.context, call=call)
        with self._stream_lock:
            self._call = call
        if self._cancel.is_set():  # cancel() came before the call was registered
            call.close()

        def target() -> None:
            try:
                outcome.append((True, tool.handler(arguments, context)))
            except ToolError as exc:
                outcome.append((False, str(exc)))
            except Exception as exc:  # a broken tool must not end the loop; the model is told
                outcome.append((False, f"{tool.name} failed: {type(exc).__name__}: {exc}"))

        worker = threading.Thread(target=target, name=f"squish-tool-{tool.name}", daemon=True)
        worker.start()
        timeout = self.config.tool_timeout_s
        if tool.name == "run_shell":
            timeout = max(timeout, self.context.shell_timeout_s + 5)  # the shell kills its own process first
        try:
            worker.join(timeout)
            if not outcome and call.close():
                worker.join(timeout)  # its change landed just before the timeout: it is returning
            if not outcome:
                landed = " (after making its change)" if call.committed else ""
                return False, f"{tool.name} timed out after {timeout:g} s{landed}"
            return outcome[0]
        finally:
            with self._stream_lock:
                self._call = None
