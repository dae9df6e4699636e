"""`squish bench`: the squish engine against mlx_lm.stream_generate, same model, same prompts, one run.

The mlx_lm side is squish.engine.baseline (it calls MLX, so it lives in the engine package).

The two sides run one after the other in one process, each with only its own
copy of the model in memory, so MLX's peak-memory counter (reset before each
side) measures each side alone. Both sides time TTFT from before the chat
template is applied to the first token, and decode tok/s as (tokens - 1) over
the time from the first token to the last.
"""

import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from ..errors import EngineFailure
from .parser import UsageError, bench_parser

SYSTEM = "Answer briefly."
# Warm-ups only need to run every kernel once; a short prompt keeps --quick under a minute on a CPU.
WARMUP = [{"role": "system", "content": "Hi."}, {"role": "user", "content": "Hi."}]
PROMPTS = [
    "Capital of France?",
    "Name a color.",
    "Two plus two?",
    "Closest planet to the sun?",
    "What do bees make?",
]
TURNS = [
    "Tell me about cats.",
    "And dogs?",
    "Which is easier to keep?",
    "Why?",
    "What do they eat?",
    "How long do they live?",
    "Do they get along?",
    "Any tips for a first pet?",
    "What about fish?",
    "Thanks, summarize.",
]


@dataclass
class Plan:
    warmup: int
    runs: int
    max_tokens: int
    turns: int
    turn_tokens: int


QUICK = Plan(warmup=5, runs=5, max_tokens=8, turns=3, turn_tokens=4)
FULL = Plan(warmup=5, runs=20, max_tokens=64, turns=10, turn_tokens=16)
WARMUP_TOKENS = 2


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(ttft_ms: list[float], decode_tps: list[float], peak_gb: float) -> dict:
    return {
        "runs": len(ttft_ms),
        "ttft_ms_p50": percentile(ttft_ms, 50),
        "ttft_ms_p95": percentile(ttft_ms, 95),
        "ttft_ms_p99": percentile(ttft_ms, 99),
        "ttft_ms_stddev": statistics.stdev(ttft_ms) if len(ttft_ms) > 1 else 0.0,
        "decode_tps": percentile(decode_tps, 50),
        "decode_tps_stddev": statistics.stdev(decode_tps) if len(decode_tps) > 1 else 0.0,
        "peak_memory_gb": peak_gb,
    }


def messages_for(prompt: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]


def run_squish(model: str | None, plan: Plan, progress) -> tuple[dict, list[dict], str, str]:
    from ..engine.engine import ChatRequest, Engine
    from ..models import store

    engine = Engine()
    loaded = store.load(engine, model).collect()
    if loaded.error:
        raise EngineFailure(loaded.error.message)
    info = loaded.loaded

    def generate(messages, max_tokens, session=None):
        result = engine.generate(
            ChatRequest(messages, session=session, max_tokens=max_tokens, temperature=0.0, seed=0)
        ).collect()
        if result.error:
            raise EngineFailure(result.error.message)
        return result.stats

    for i in range(plan.warmup):
        progress(f"squish warm-up {i + 1}/{plan.warmup}")
        generate(WARMUP, WARMUP_TOKENS)
    ttft, tps, peak = [], [], 0.0
    for i in range(plan.runs):
        progress(f"squish run {i + 1}/{plan.runs}")
        stats = generate(messages_for(PROMPTS[i % len(PROMPTS)]), plan.max_tokens)
        ttft.append(stats.ttft_ms)
        tps.append(stats.decode_tps)
        peak = max(peak, stats.peak_memory_gb)
    curve = []
    history = [{"role": "system", "content": SYSTEM}]
    for turn, text in enumerate(TURNS[: plan.turns], 1):
        progress(f"squish turn {turn}/{plan.turns}")
        history.append({"role": "user", "content": text})
        result = engine.generate(
            ChatRequest(list(history), session="bench", max_tokens=plan.turn_tokens, temperature=0.0, seed=0)
        ).collect()
        if result.error:
            raise EngineFailure(result.error.message)
        history.append({"role": "assistant", "content": result.text})
        stats = result.stats
        curve.append(
            {
                "turn": turn,
                "ttft_ms": stats.ttft_ms,
                "prompt_tokens": stats.prompt_tokens,
                "cached_tokens": stats.cached_tokens,
            }
        )
    engine.unload().collect()
    engine.shutdown()
    return summarize(ttft, tps, peak), curve, info.path, info.name


def run(model: str | None, quick: bool, progress=lambda _: None, **overrides) -> dict:
    plan = QUICK if quick else FULL
    plan = Plan(**{**plan.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    if plan.warmup < 5:
        raise ValueError("at least 5 warm-up runs are required")
    started = time.perf_counter()
    squish, curve, model_dir, name = run_squish(model, plan, progress)
    from ..engine.baseline import run_mlx_lm
    from ..models.hardware import describe

    warmups = [(WARMUP, WARMUP_TOKENS)] * plan.warmup
    runs = [(messages_for(PROMPTS[i % len(PROMPTS)]), plan.max_tokens) for i in range(plan.runs)]
    baseline = summarize(*run_mlx_lm(model_dir, warmups, runs, progress))
    first, last = curve[0]["ttft_ms"], curve[-1]["ttft_ms"]
    return {
        "name": "quick" if quick else "full",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": name,
        "plan": plan.__dict__,
        "hardware": describe(),
        "squish": squish,
        "mlx_lm": baseline,
        "decode_ratio": squish["decode_tps"] / baseline["decode_tps"] if baseline["decode_tps"] else 0.0,
        "ttft_ratio": squish["ttft_ms_p50"] / baseline["ttft_ms_p50"] if baseline["ttft_ms_p50"] else 0.0,
        "multi_turn": {"turns": curve, "last_over_first_ttft": last / first if first else 0.0},
        "seconds": time.perf_counter() - started,
    }


def save(result: dict, results_dir: Path, name: str, now: datetime | None = None) -> Path:
    """Append `results_dir/<timestamp>_<name>.json` (the time `now`, UTC, by default the current
    one); an existing file is never overwritten: a second result in the same second gets `-1`."""
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    for attempt in range(100):
        suffix = f"-{attempt}" if attempt else ""
        path = results_dir / f"{stamp}_{name}{suffix}.json"
        try:
            with path.open("x") as handle:
                json.dump(result, handle, indent=2)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free result file name in {results_dir}")


def summary(result: dict) -> dict:
    """The `squish bench --json` object."""
    keys = ("decode_tps", "ttft_ms_p50", "peak_memory_gb")
    return {
        "squish": {k: result["squish"][k] for k in keys},
        "mlx_lm": {k: result["mlx_lm"][k] for k in keys},
        "decode_ratio": result["decode_ratio"],
    }


def table(result: dict) -> str:
    s, b = result["squish"], result["mlx_lm"]
    rows = [
        ("TTFT p50 (ms)", s["ttft_ms_p50"], b["ttft_ms_p50"], "{:.0f}"),
        ("TTFT p95 (ms)", s["ttft_ms_p95"], b["ttft_ms_p95"], "{:.0f}"),
        ("TTFT p99 (ms)", s["ttft_ms_p99"], b["ttft_ms_p99"], "{:.0f}"),
        ("decode tok/s p50", s["decode_tps"], b["decode_tps"], "{:.2f}"),
        ("decode tok/s stddev", s["decode_tps_stddev"], b["decode_tps_stddev"], "{:.2f}"),
        ("peak memory (GB)", s["peak_memory_gb"], b["peak_memory_gb"], "{:.3f}"),
    ]
    hw = result["hardware"]
    lines = [
        f"model {result['model']} on {hw['backend']} ({hw['chip']}, {hw['cores']} cores), "
        f"mlx {hw['mlx']}, mlx-lm {hw['mlx_lm']}; {s['runs']} runs after {result['plan']['warmup']} warm-ups",
        f"{'':22}{'squish':>12}{'mlx_lm':>12}{'ratio':>8}",
    ]
    for label, mine, theirs, fmt in rows:
        ratio = f"{mine / theirs:.2f}" if theirs else "-"
        lines.append(f"{label:22}{fmt.format(mine):>12}{fmt.format(theirs):>12}{ratio:>8}")
    curve = result["multi_turn"]
    ttfts = " ".join(f"{t['ttft_ms']:.0f}" for t in curve["turns"])
    lines.append(f"multi-turn TTFT (ms, squish, KV cache kept): {ttfts}")
    lines.append(f"last turn / first turn TTFT: {curve['last_over_first_ttft']:.2f}")
    lines.append(f"decode ratio squish/mlx_lm: {result['decode_ratio']:.3f}")
    return "\n".join(lines)


def bench(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    if args.warmup is not None and args.warmup < 5:
        raise UsageError("--warmup must be at least 5")
    if args.turns is not None and not 2 <= args.turns <= 10:
        raise UsageError("--turns must be between 2 and 10")
    for name in ("runs", "max_tokens"):
        value = getattr(args, name)
        if value is not None and value < 2:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 2")
    def progress(text: str) -> None:
        if sys.stderr.isatty():
            print(f"\r\033[2K{text}", end="", file=sys.stderr, flush=True)

    result = run(
        args.model,
        args.quick,
        progress,
        runs=args.runs,
        warmup=args.warmup,
        max_tokens=args.max_tokens,
        turns=args.turns,
    )
    if sys.stderr.isatty():
        print("\r\033[2K", end="", file=sys.stderr, flush=True)
    path = save(result, Path(args.results_dir), f"bench-{result['name']}")
    if args.json:
        print(json.dumps(summary(result)))
    else:
        print(table(result))
        print(f"saved {path}")
    return 0
