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
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from . import constrain, prompt
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
    ToolFinished,
    Transcript,
    Validated,
)
from .parser import CLOSE, ParsedReply, parse
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


@dataclass
class AgentResult:
    text: str  # the answer; empty when the run stopped without one
    reason: str  # Stopped.reason
    message: str
    transcript: Transcript
    seed: int
    tool_calls: list[dict] = field(default_factory=list)  # validated calls, {"name", "arguments"}

    def public(self) -> dict:
        return {
            "text": self.text,
            "stop_reason": self.reason,
            "message": self.message,
            "steps": [step.public() for step in self.transcript.steps],
            "notices": self.transcript.notices,
            "seed": self.seed,
        }


class Abort(Exception):
    def __init__(self, reason: str, message: str):
        self.reason, self.message = reason, message


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
        self.constraint_problem = constrain.check(self.tools) if self.config.constrained else ""

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
        if any(m.get("role") not in ("user", "assistant") for m in history):
            raise ValueError("history may hold only user and assistant turns: the system prompt is squish's")
        messages = [{"role": "system", "content": self.system}]
        messages += [{"role": m["role"], "content": prompt.neutralize(m["content"])} for m in history]
        messages.append({"role": "user", "content": prompt.neutralize(task)})
        if self.constraint_problem:
            self.emit(
                Notice(
                    0, f"constrained decoding is off: llguidance cannot use these schemas ({self.constraint_problem})"
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
        return AgentResult(answer or "", reason, message, self.transcript, self.seed, self.proposed)

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

    def _reply_with_valid_calls(self, step: int, messages: list[dict]) -> tuple[str, ParsedReply, list[str]]:
        """The reply (raw, parsed) with valid calls and their ids, after at most max_retries retries."""
        attempt_messages = list(messages)
        for attempt in range(self.config.max_retries + 1):
            temperature, seed = self._sampling(attempt)
            text, finish = self._generate(step, attempt, attempt_messages, temperature, seed)
            reply = parse(text)
            problems = []
            if reply.error:
                problems.append(reply.error)
            elif reply.opened_call and finish == "length":
                # The parser can close cut-off JSON, but a cut-off argument is not what the model meant.
                problems.append(f"the reply reached the limit of {self.config.call_tokens} tokens inside the tool call")
            ids = []
            for index, call in enumerate(reply.calls, 1):
                call_id = f"s{step}c{index}" if attempt == 0 else f"s{step}r{attempt}c{index}"
                ids.append(call_id)
                self.emit(CallProposed(step, ToolCall(call_id, call["name"], call["arguments"])))
                errors = self._validate(call)
                self.emit(Validated(step, call_id, not errors, tuple(errors)))
                problems += errors
            if not problems:
                messages[:] = attempt_messages  # failed replies and corrections stay: the model learns from them
                return text, reply, ids
            reason = "; ".join(problems)
            if attempt == self.config.max_retries:
                raise Abort(
                    "invalid",
                    f"the model made no valid tool call after {self.config.max_retries} corrective retries: {reason}",
                )
            next_temperature, next_seed = self._sampling(attempt + 1)
            self.emit(Retrying(step, attempt + 1, reason, next_temperature, next_seed))
            attempt_messages += [
                {"role": "assistant", "content": prompt.neutralize(text)},
                {"role": "user", "content": prompt.correction(reason, self.tools)},
            ]
        raise AssertionError("unreachable")

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
        self, step: int, attempt: int, messages: list[dict], temperature: float, seed: int
    ) -> tuple[str, str]:
        from squish.engine.engine import ChatRequest

        factory = None
        if self.config.constrained and not self.constraint_problem:
            if self.template_tools:
                factory = constrain.processor_factory(self.tools, lazy=self.config.execute, min_calls=1)
            else:
                # The first reply must call a tool (a small model asked to act would otherwise
                # often answer from nothing); later ones may be [] ("done").
                min_calls = int(step == 1 or not self.config.execute)
                factory = constrain.processor_factory(self.tools, lazy=False, min_calls=min_calls)
        request = ChatRequest(
            messages,
            session=self.session,
            max_tokens=self.config.call_tokens,
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
        return text, finish

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
        already made with nothing changed since; its result is in the conversation, so the
        model has nothing new to learn by calling and is asked for the answer instead.
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
        stale = [
            c
            for c in calls
            if self.registry.get(c["name"]).risk != RISKY and self.executed.get(canonical(c)) == self.changes
        ]
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
            ok, output = self._run_tool(tool, call["arguments"])
            if tool.risk == RISKY:
                self.changes += 1
        output = cap(output, self.context.output_cap)
        self.executed[canonical(call)] = self.changes
        self.results.append((call, ok, output))
        self.emit(ToolFinished(step, call_id, call["name"], ok, output, (time.perf_counter() - started) * 1000))
        return ok, output

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
