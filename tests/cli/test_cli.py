"""The CLI through subprocesses: exit codes, stdout/stderr separation, --quiet, --json, stdin, startup."""

import json
import subprocess
import sys

import pytest
from helpers import SQUISH, squish_env


def squish(home, *args, stdin: bytes = b""):
    return subprocess.run(
        [*SQUISH, *args], input=stdin, capture_output=True, env=squish_env(home), timeout=110
    )


def one_error_line(proc) -> str:
    err = proc.stderr.decode()
    assert err.startswith("squish: error: ")
    assert err.count("\n") == 1, err
    assert proc.stdout == b""
    return err


def test_quiet_answer_names_paris(home):
    proc = squish(home, "--quiet", "-p", "What is the capital of France?", "--temp", "0", "--max-tokens", "12")
    assert proc.returncode == 0, proc.stderr
    assert "Paris" in proc.stdout.decode()
    assert proc.stderr == b""


def test_json_from_stdin(home):
    proc = squish(home, "--json", "-p", "-", "--temp", "0", "--max-tokens", "12", "--seed", "7",
                  stdin=b"What is the capital of France?")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert set(out) == {"text", "thinking", "model", "chat", "finish_reason", "stats", "notices"}
    assert out["thinking"] == "" and isinstance(out["chat"], int) and out["notices"] == []
    assert "Paris" in out["text"] and out["model"] == "smollm2:135m"
    assert out["finish_reason"] == "stop"
    for key in ("ttft_ms", "prefill_tps", "decode_tps", "prompt_tokens", "generation_tokens", "peak_memory_gb"):
        assert out["stats"][key] > 0
    assert out["stats"]["seed"] == 7


def test_streaming_mode_puts_stats_on_stderr_only(home):
    proc = squish(home, "-p", "Say hello.", "--temp", "0", "--max-tokens", "4", "--system", "Be brief.")
    assert proc.returncode == 0, proc.stderr
    assert "TTFT" not in proc.stdout.decode()
    assert "TTFT" in proc.stderr.decode() and "seed" in proc.stderr.decode()


@pytest.mark.parametrize(
    "args, stdin, message",
    [
        (["-p", ""], b"", "empty prompt"),
        (["-p", "-"], b"  \n", "empty prompt"),
        (["-p", "-"], b"\xff\xfe bad", "not valid UTF-8"),
        (["-p", "hi", "--max-tokens", "0"], b"", "max_tokens"),
        (["-p", "hi", "--temp", "-2"], b"", "temperature"),
        (["-p", "hi", "--model", "no-such-model:7b"], b"", "unknown model"),
        (["--no-such-flag"], b"", "unrecognized arguments"),
        (["-p", "hi", "--max-tokens", "many"], b"", "invalid int value"),
    ],
)
def test_user_errors_exit_1_with_one_line(home, args, stdin, message):
    proc = squish(home, *args, stdin=stdin)
    assert proc.returncode == 1
    assert message in one_error_line(proc)


def test_broken_model_directory_is_a_system_error(home, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{oops")
    proc = squish(home, "-p", "hi", "--model", str(broken))
    assert proc.returncode == 2
    assert "not valid JSON" in one_error_line(proc)


def test_help_has_examples_and_imports_neither_mlx_nor_textual(home):
    code = (
        "import sys, runpy; sys.argv = ['squish', '--help']\n"
        "try:\n    runpy.run_module('squish', run_name='__main__')\n"
        "except SystemExit as e:\n    assert e.code == 0\n"
        "print([m for m in sys.modules if m.split('.')[0] in ('mlx', 'textual', 'mlx_lm')])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=squish_env(home))
    assert proc.returncode == 0, proc.stderr
    assert "examples:" in proc.stdout and "squish -p" in proc.stdout
    assert proc.stdout.strip().endswith("[]")


def test_import_is_light_and_loads_nothing_but_the_standard_library(home):
    """The startup contract, checked by what is imported, not by a clock on a busy machine:
    `import squish, squish.cli` (what `squish --help` needs) loads only squish and the standard
    library. The startup time itself is a metric for benchmarks, not a test."""
    code = (
        "import os, sys; before = set(sys.modules)\n"
        "import squish, squish.cli\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'squish'}))\n"
        "import psutil; print(psutil.Process(os.getpid()).memory_info().rss)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=squish_env(home))
    assert proc.returncode == 0, proc.stderr
    libraries, rss = proc.stdout.splitlines()
    assert libraries == "[]"
    assert int(rss) < 200e6


def test_version(home):
    proc = squish(home, "--version")
    assert proc.returncode == 0 and proc.stdout.decode().startswith("squish 0.")


def test_bench_quick_json_on_a_tiny_model(home, tiny_model, tmp_path):
    results = tmp_path / "results"
    args = ["bench", "--quick", "--json", "--runs", "2", "--model", str(tiny_model), "--results-dir", str(results)]
    proc = squish(home, *args)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["kernels"]
    assert set(out["tasks"]) == {"short", "long", "edit"}
    assert out["tasks"]["long"]["prompt_tokens"] > 400  # the ~500-token prompt
    for task in out["tasks"].values():
        assert set(task["sides"]) == {"squish", "squish-plain", "mlx_lm"}
        for side in task["sides"].values():
            assert side["decode_tps"] > 0 and side["prefill_tps"] > 0 and side["peak_memory_gb"] > 0
        compare = task["compare"]["squish/mlx_lm"]
        assert compare["decode_ratio"] > 0 and 0 < compare["decode_p_value"] <= 1
        drafts = task["compare"]["squish/squish-plain"]
        assert drafts["same_text"] == drafts["pairs"] == 2  # drafts change no token of a greedy answer
        assert task["sides"]["squish-plain"]["draft_tokens"] == 0
    [saved_file] = results.glob("*_bench-quick.json")
    saved = json.loads(saved_file.read_text())
    assert {"chip", "cores", "ram_gb", "os", "mlx", "mlx_lm", "backend", "threads"} <= set(saved["hardware"])
    assert saved["plan"]["warmup"] >= 5 and saved["plan"]["max_tokens"] >= 64
    # interleaved: each round runs every task on every side, the sides' order rotated by a
    # different offset each round (two rounds: offsets 0 and 1, in a shuffled order)
    assert len(saved["samples"]) == 2 * 3 * 3
    firsts = [s["side"] for s in saved["samples"] if s["task"] == "short"][::3]
    assert sorted(firsts) == ["squish", "squish-plain"]
    side = saved["tasks"]["short"]["sides"]["squish"]
    assert {"p50", "p95", "p99", "stddev"} <= set(side["decode_tps"]) and side["generated_tokens"]["max"] <= 64
    assert saved["tasks"]["short"]["compare"]["squish/mlx_lm"]["decode_wilcoxon"]["n"] <= 2
    assert len(saved["multi_turn"]["turns"]) == 3


def test_the_result_writer_appends_and_never_overwrites(tmp_path):
    from datetime import datetime, timezone

    from squish.cli.bench_results import save

    results, now = tmp_path / "results", datetime(2026, 12, 1, 9, 30, 5, tzinfo=timezone.utc)
    first = save({"run": 1}, results, "bench-quick", now=now)
    second = save({"run": 2}, results, "bench-quick", now=now)  # the same second
    assert (first.name, second.name) == ("20261201T093005Z_bench-quick.json", "20261201T093005Z_bench-quick-1.json")
    assert json.loads(first.read_text()) == {"run": 1} and json.loads(second.read_text()) == {"run": 2}
    (results / "20261201T093005Z_other.json").write_text("earlier")
    third = save({"run": 3}, results, "other", now=now)
    assert third.name == "20261201T093005Z_other-1.json"
    assert (results / "20261201T093005Z_other.json").read_text() == "earlier"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--warmup", "2"], "at least 5"),
        (["--turns", "11"], "between 2 and 10"),
        (["--max-tokens", "8"], "at least 64"),
        (["--anchor", "llama.cpp", "--model", "qwen3:8b"], "--gguf"),
        (["--anchor", "llama.cpp", "--gguf", "/nonexistent.gguf"], "no such file"),
    ],
)
def test_bench_refuses_bad_plans(home, args, message):
    proc = squish(home, "bench", *args)
    assert proc.returncode == 1
    assert message in one_error_line(proc)


def test_a_prompt_longer_than_the_window_is_one_line_and_library_warnings_need_v(home, tiny_model):
    prompt = "word " * 9000
    proc = squish(home, "-p", prompt, "--model", str(tiny_model), "--max-tokens", "4")
    assert proc.returncode == 1
    assert "the context window is 8192" in one_error_line(proc)  # the tokenizer's own warning is not shown
    verbose = squish(home, "-v", "-p", prompt, "--model", str(tiny_model), "--max-tokens", "4")
    assert verbose.returncode == 1 and b"Token indices sequence length is longer" in verbose.stderr
