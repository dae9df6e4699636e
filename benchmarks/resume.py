"""Instant resume: continuing a chat from its saved KV cache against a fresh one-line prompt.

    uv run python benchmarks/resume.py                          # 5 warm-ups, 10 runs per side
    uv run python benchmarks/resume.py --runs 2 --mlx-lm-runs 1  # a short check that it works

Setup: `squish -p` with a first message of about 400 tokens (--first-words) in a fresh squish
home that shares the models of the usual one; that saves the chat and its KV cache. Then, as
the issue's bar states it, every measured run is a new process (so each continued run reads
the cache from disk, as after a restart), run in interleaved rounds (rotations in a shuffled order):

- continued:  `squish -c --no-save --json -p "one more question"`: the chat, from its saved cache;
- fresh:      `squish --no-save --json -p "one more question"`: the same line as a new chat;
- reprefill:  `squish --chat ID --no-save --json -p "one more question"` in a home with the same
              history but no saved caches: what resuming costs without them (every peer's case).

In one process (one engine, the chat's messages), the same comparison without process starts:
the continued turn from the engine's in-memory session against the fresh line, and, as the
baseline, mlx_lm.stream_generate prefilling the whole history (mlx_lm keeps no cache across
processes; its runs are few because stock MLX prefill on a CPU is slow: --mlx-lm-runs).

TTFT is the engine's: from the request's submission to the first token, so reading and checking
the cache file counts. Bars (issue 10): continued TTFT p50 <= 1.2x fresh p50, cross-process and
in-process, with the earlier tokens reported as cached. Every side discards >= 5 warm-ups; the
result is appended to benchmarks/results/<timestamp>_resume.json with the hardware.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from squish.cli.bench_results import save
from squish.cli.bench_stats import percentile, round_orders
from squish.cli.bench_sides import mlx_lm_worker
from squish.engine.engine import ChatRequest, Engine
from squish.models.hardware import describe
from squish.history import FILE, History
from squish.models import store

BAR = 1.2
QUESTION = "one more question"
SENTENCES = [
    "The river starts as a spring high in the hills and gathers a dozen streams before the first town.",
    "Farmers along its banks grow barley, apples and, further south, a little wine.",
    "In spring the snowmelt raises the water by two metres and the old mill wheel turns again.",
    "A stone bridge with seven arches has carried the road across it since the twelfth century.",
    "Herons wait in the shallows at dawn while kingfishers dart between the willows.",
    "The town market sells smoked trout, goat cheese and bread baked in wood ovens.",
    "Barges once carried timber and salt downstream; today they carry mostly tourists.",
    "A museum in the old customs house tells the story of the floods of 1910 and 1955.",
    "Walkers follow a path on the east bank that climbs to a ruined castle with a view of three valleys.",
    "In autumn the beech woods turn copper and the first fogs settle on the water every morning.",
    "Local legend says a bell from a drowned chapel still rings under the lake on stormy nights.",
    "At the estuary the river widens into salt marshes full of geese in winter.",
]


def first_message(words: int) -> str:
    text, i = [], 0
    while sum(len(s.split()) for s in text) < words:
        text.append(SENTENCES[i % len(SENTENCES)])
        i += 1
    return "Here are my notes about a river I visited. " + " ".join(text) + " Please keep them in mind."


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or path (default: the embedded model)")
    parser.add_argument("--warmup", type=int, default=5, help="discarded warm-up runs per side (at least 5)")
    parser.add_argument("--runs", type=int, default=10, help="measured runs per side")
    parser.add_argument("--mlx-lm-runs", type=int, default=3, help="measured mlx_lm full-history runs")
    parser.add_argument("--first-words", type=int, default=300, help="words of the first message (~400 tokens)")
    parser.add_argument("--max-tokens", type=int, default=8, help="tokens per answer (TTFT is what counts)")
    parser.add_argument("--home", help="the squish home whose models are used (default: the usual one)")
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    if args.warmup < 5:
        parser.error("--warmup must be at least 5")
    if args.runs < 2 or args.mlx_lm_runs < 1:
        parser.error("--runs must be at least 2 and --mlx-lm-runs at least 1")
    return args


def mlx_lm_full_history(model_dir, short, full, warmup: int, runs: int, max_tokens: int, progress):
    """TTFTs (ms) and peak memory of mlx_lm prefilling the whole history, in its own process."""
    worker = mlx_lm_worker(model_dir)
    try:
        short_tokens, full_tokens = worker.render(short), worker.render(full)
        for i in range(warmup):
            progress(f"mlx_lm warm-up {i + 1}/{warmup}")
            worker.generate(short_tokens, max_tokens)
        samples = []
        for i in range(runs):
            progress(f"mlx_lm run {i + 1}/{runs}")
            samples.append(worker.generate(full_tokens, max_tokens))
    finally:
        worker.close()
    return [s.ttft_ms for s in samples], max(s.peak_memory_gb for s in samples)


def stats_of(values: list[float]) -> dict:
    return {
        "runs": len(values),
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "stddev": statistics.stdev(values) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


class Cli:
    """`squish` subprocesses in a given home; each returns its --json object."""

    def __init__(self, home: Path, model: str | None, max_tokens: int) -> None:
        self.home, self.model, self.max_tokens = home, model, max_tokens

    def run(self, *args: str) -> dict:
        command = [str(Path(sys.executable).with_name("squish")), "--json", "--temp", "0", "--seed", "0"]
        command += ["--max-tokens", str(self.max_tokens), *args]
        if self.model and "-c" not in args and "--chat" not in args:
            command += ["--model", self.model]
        env = {**os.environ, "SQUISH_HOME": str(self.home), "PYTHONIOENCODING": "utf-8"}
        proc = subprocess.run(command, capture_output=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode().strip()}")
        return json.loads(proc.stdout)


def make_home(home: Path, models: Path) -> Path:
    """An empty squish home (no chats, no config) that uses `models`."""
    home.mkdir(parents=True)
    (home / "models").symlink_to(models)
    return home


def interleaved(sides: dict, warmup: int, runs: int, progress) -> dict[str, list[dict]]:
    """Run each side warmup + runs times in interleaved rounds (round_orders); returns the measured outputs."""
    names = list(sides)
    measured: dict[str, list[dict]] = {name: [] for name in names}
    for round_, order in enumerate(round_orders(names, warmup + runs)):
        outputs = {name: sides[name]() for name in order}
        if round_ >= warmup:
            for name, out in outputs.items():
                measured[name].append(out)
        kind = "warm-up" if round_ < warmup else "run"
        times = ", ".join(f"{name} {out['stats']['ttft_ms']:.0f} ms" for name, out in outputs.items())
        progress(f"{kind} {round_ + 1}/{warmup + runs}: {times}")
    return measured


def side_summary(outputs: list[dict]) -> dict:
    ttft = [o["stats"]["ttft_ms"] for o in outputs]
    return {
        "ttft_ms": stats_of(ttft),
        "prompt_tokens": outputs[0]["stats"]["prompt_tokens"],
        "cached_tokens": [o["stats"]["cached_tokens"] for o in outputs],
        "notices": sorted({n for o in outputs for n in o.get("notices", [])}),
    }


def in_process(model: str | None, source_home: Path, text: str, warmup: int, runs: int, max_tokens: int, progress):
    """The same sides in one process: the continued turn from the engine's in-memory session."""
    engine = Engine()
    loaded = store.load(engine, model, source_home).collect()
    if loaded.error:
        raise SystemExit(loaded.error.message)
    first = [{"role": "user", "content": text}]

    def ask(messages, session=None) -> tuple[dict, str]:
        result = engine.generate(
            ChatRequest(messages, session=session, max_tokens=max_tokens, temperature=0.0, seed=0)
        ).collect()
        if result.error:
            raise SystemExit(result.error.message)
        return {"stats": result.stats.public()}, result.text

    _, answer = ask(first, session="resume")
    continued = first + [{"role": "assistant", "content": answer}, {"role": "user", "content": QUESTION}]

    def continue_chat() -> dict:
        ask(first, session="resume")  # not timed: the session back to the chat after its first answer
        return ask(continued, session="resume")[0]

    sides = {"continued": continue_chat, "fresh": lambda: ask([{"role": "user", "content": QUESTION}])[0]}
    measured = interleaved(sides, warmup, runs, progress)
    engine.shutdown()
    return {name: side_summary(outputs) for name, outputs in measured.items()}, loaded.loaded


def main() -> None:
    args = arguments()
    progress = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    started = time.perf_counter()
    source_home = store.squish_home(Path(args.home) if args.home else None)
    store.models_dir(source_home).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="squish-resume-") as tmp:
        home = make_home(Path(tmp) / "home", store.models_dir(source_home))
        cli = Cli(home, args.model, args.max_tokens)
        text = first_message(args.first_words)
        progress("setup: the first message, saved with its KV cache")
        first = cli.run("-p", text)
        chat_id = first["chat"]
        bare = make_home(Path(tmp) / "no-cache", store.models_dir(source_home))
        shutil.copy(home / FILE, bare / FILE)  # the same history, no saved caches
        bare_cli = Cli(bare, args.model, args.max_tokens)
        sides = {
            "continued": lambda: cli.run("-c", "--no-save", "-p", QUESTION),
            "fresh": lambda: cli.run("--no-save", "-p", QUESTION),
            "reprefill": lambda: bare_cli.run("--chat", str(chat_id), "--no-save", "-p", QUESTION),
        }
        measured = interleaved(sides, args.warmup, args.runs, progress)
        cross = {name: side_summary(outputs) for name, outputs in measured.items()}
        history = History(home / FILE)
        chat = history.context(chat_id)
        history.close()

    progress("in one process")
    local, info = in_process(args.model, source_home, text, args.warmup, args.runs, args.max_tokens, progress)
    progress("mlx_lm: the whole history prefilled (no cache across processes)")
    full = chat + [{"role": "user", "content": QUESTION}]
    short = [{"role": "user", "content": QUESTION}]
    ttft, peak = mlx_lm_full_history(info.path, short, full, args.warmup, args.mlx_lm_runs, args.max_tokens, progress)

    # At least the whole first prompt must come from the cache (and the answer, as far as the
    # template renders it with the same tokens).
    least_cached = first["stats"]["prompt_tokens"]
    ratio = cross["continued"]["ttft_ms"]["p50"] / cross["fresh"]["ttft_ms"]["p50"]
    local_ratio = local["continued"]["ttft_ms"]["p50"] / local["fresh"]["ttft_ms"]["p50"]
    result = {
        "name": "resume",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": info.name,
        "kernels": info.kernels,
        "plan": {k: v for k, v in vars(args).items() if k not in ("results_dir", "home")},
        "hardware": describe(),
        "first_turn": first["stats"],
        "cross_process": cross,
        "in_process": local,
        "mlx_lm_full_history": {"ttft_ms": stats_of(ttft), "peak_memory_gb": peak, "runs": len(ttft)},
        "continued_over_fresh_ttft": ratio,
        "continued_over_fresh_ttft_in_process": local_ratio,
        "earlier_tokens_cached": all(c >= least_cached for c in cross["continued"]["cached_tokens"])
        and all(c >= least_cached for c in local["continued"]["cached_tokens"]),
        "bar": BAR,
        "bar_met": ratio <= BAR and local_ratio <= BAR,
        "seconds": time.perf_counter() - started,
    }
    path = save(result, Path(args.results_dir), "resume")
    print(
        f"first message {first['stats']['prompt_tokens']} tokens; continued: "
        f"{cross['continued']['cached_tokens'][0]} cached\n"
        f"across processes: continued {cross['continued']['ttft_ms']['p50']:.0f} ms p50, "
        f"fresh {cross['fresh']['ttft_ms']['p50']:.0f} ms, reprefill {cross['reprefill']['ttft_ms']['p50']:.0f} ms "
        f"-> continued/fresh {ratio:.2f} (bar {BAR})\n"
        f"in one process: continued {local['continued']['ttft_ms']['p50']:.0f} ms, fresh "
        f"{local['fresh']['ttft_ms']['p50']:.0f} ms -> {local_ratio:.2f}; "
        f"mlx_lm whole history {percentile(ttft, 50):.0f} ms\n"
        f"cached as expected: {result['earlier_tokens_cached']}; bar met: {result['bar_met']}\n{path}"
    )


if __name__ == "__main__":
    main()
