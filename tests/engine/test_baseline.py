"""The bench's baseline processes: their JSON-lines protocol, timing, and the worker handle."""

import json
import sys

import pytest

from squish.cli.bench_sides import BASELINE, LLAMA_CPP_CMAKE_ARGS, LLAMA_CPP_PACKAGE, Worker, llama_cpp_command
from squish.errors import EngineFailure, UserError
from squish.engine import baseline


class Scripted:
    """A backend whose answers are fixed: the protocol without a model."""

    version = "scripted"

    def render(self, messages):
        return [len(m["content"]) for m in messages]

    def generate(self, tokens, max_tokens):
        if not tokens:
            raise ValueError("no prompt")
        return {"tokens": tokens[:max_tokens]}


def test_serve_answers_each_line_and_survives_bad_requests():
    lines = [
        json.dumps({"op": "render", "messages": [{"role": "user", "content": "abc"}]}),
        "",
        json.dumps({"op": "generate", "tokens": [5, 6, 7], "max_tokens": 2}),
        json.dumps({"op": "generate", "tokens": [], "max_tokens": 2}),
        json.dumps({"op": "fly"}),
        "not json",
        json.dumps({"op": "generate", "tokens": [1], "max_tokens": 1}),
    ]
    out = []
    baseline.serve(Scripted(), lines, out.append)
    answers = [json.loads(line) for line in out]
    assert answers[0] == {"tokens": [3]}
    assert answers[1] == {"tokens": [5, 6]}
    assert answers[2] == {"error": "ValueError: no prompt"}
    assert answers[3] == {"error": "unknown op 'fly'"}
    assert answers[4]["error"].startswith("JSONDecodeError")
    assert answers[5] == {"tokens": [1]}


def test_timed_stops_at_eos_or_max_tokens_and_times_like_squish():
    script = iter([11, 12, None])
    result = baseline.timed([1, 2, 3, 4], 10, lambda _: 10, lambda _: next(script))
    assert result["tokens"] == [10, 11, 12]
    assert result["ttft_ms"] >= 0 and result["prefill_tps"] > 0 and result["decode_tps"] > 0
    capped = baseline.timed([1], 2, lambda _: 10, lambda token: token + 1)
    assert capped["tokens"] == [10, 11]
    assert baseline.timed([1], 5, lambda _: None, lambda _: 1)["tokens"] == []


class FakeLlama:
    """llama_cpp.Llama's calls the anchor makes, recorded; token ids count up to an EOS of 2."""

    def __init__(self, answer):
        self.calls, self.answer = [], list(answer)

    def reset(self):
        self.calls.append("reset")

    def eval(self, tokens):
        self.calls.append(("eval", list(tokens)))

    def sample(self, temp, repeat_penalty):
        assert temp == 0.0 and repeat_penalty == 1.0  # greedy, nothing else
        return self.answer.pop(0)

    def detokenize(self, tokens):
        return " ".join(map(str, tokens)).encode()


def test_the_anchor_evaluates_the_prompt_afresh_then_one_token_at_a_time():
    anchor = object.__new__(baseline.LlamaCpp)
    anchor.llm, anchor.eos = FakeLlama([7, 8, 2]), 2
    result = anchor.generate([100, 101, 102], 16)
    assert anchor.llm.calls == ["reset", ("eval", [100, 101, 102]), ("eval", [7]), ("eval", [8])]
    assert result["tokens"] == [7, 8] and result["text"] == "7 8"
    assert result["peak_memory_gb"] > 0
    anchor.llm = FakeLlama([7, 8, 9, 10])
    assert anchor.generate([100], 3)["tokens"] == [7, 8, 9]


def test_llama_cpp_runs_outside_the_project_environment(tmp_path):
    uv = tmp_path / "uv"
    uv.write_text("#!/bin/sh\n")
    uv.chmod(0o755)
    path = f"/project/.venv/bin:{tmp_path}"
    command, env = llama_cpp_command({"PATH": path, "VIRTUAL_ENV": "/project/.venv"})
    assert command[:3] == [str(uv), "run", "--no-project"]
    assert env["PATH"] == str(tmp_path)  # not the project's interpreter
    assert command[command.index("--with") + 1] == LLAMA_CPP_PACKAGE
    assert "VIRTUAL_ENV" not in env and env["CMAKE_ARGS"] == LLAMA_CPP_CMAKE_ARGS
    own = llama_cpp_command({"PATH": "", "SQUISH_LLAMA_CPP_PYTHON": "/opt/py", "CMAKE_ARGS": "-DX=1"})
    assert own == (["/opt/py"], {"PATH": "", "SQUISH_LLAMA_CPP_PYTHON": "/opt/py", "CMAKE_ARGS": "-DX=1"})
    with pytest.raises(UserError, match="needs uv"):
        llama_cpp_command({"PATH": str(tmp_path / "empty")})


def test_mlx_lm_worker_renders_and_generates_on_a_tiny_model(tiny_model, tiny_engine):
    from squish.engine.engine import ChatRequest

    messages = [{"role": "user", "content": "Hello there."}]
    worker = Worker("mlx_lm", [sys.executable, str(BASELINE), "mlx_lm", str(tiny_model)])
    try:
        assert worker.version
        tokens = worker.render(messages)
        squish = tiny_engine.generate(ChatRequest(messages, max_tokens=2, temperature=0)).collect()
        assert len(tokens) == squish.stats.prompt_tokens
        sample = worker.generate(tokens, 5)
        assert sample.prompt_tokens == len(tokens) and 1 <= sample.generated_tokens <= 5
        assert sample.ttft_ms > 0 and sample.peak_memory_gb > 0
        with pytest.raises(EngineFailure, match="mlx_lm: KeyError"):
            worker.request({"op": "generate"})
        assert worker.generate(tokens, 2).generated_tokens <= 2  # still serving after the error
    finally:
        worker.close()


def test_a_worker_that_cannot_load_is_one_error(tmp_path):
    with pytest.raises(EngineFailure, match="cannot load"):
        Worker("mlx_lm", [sys.executable, str(BASELINE), "mlx_lm", str(tmp_path / "none")])
    with pytest.raises(EngineFailure, match="stopped: boom"):
        Worker("x", [sys.executable, "-c", "import sys; print('boom', file=sys.stderr); sys.exit(3)"])


def test_main_refuses_unknown_backends(capsys):
    assert baseline.main(["vllm", "x"]) == 2
    assert "usage" in capsys.readouterr().err
