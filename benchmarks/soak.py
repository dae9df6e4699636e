"""Soak: many chat turns through one engine; does memory grow turn over turn?

Each turn is a short chat answer on the real engine (the embedded model unless --model): the
conversation grows for a few turns, then a new chat starts (a new KV-cache session, so old
sessions are evicted the way the app's are). The first --warmup turns fill the engine's session
pool and are discarded. After every turn the process RSS and MLX's active
and cache memory are read on the engine thread. The first --warmup turns are discarded; over the
rest, each reading gets a least-squares slope (MB per turn) and the growth from the first to the
last tenth of the run. Nothing here is timed against a budget: it reports what it measured.

    uv run python benchmarks/soak.py                 # 200 turns (the official run: idle machine)
    uv run python benchmarks/soak.py --turns 30      # a short check that it works (shared machine)
"""

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from squish.cli.bench_results import save
from squish.engine.engine import MAX_SESSIONS, ChatRequest, Engine
from squish.models import store
from squish.models.hardware import describe

QUESTIONS = [
    "Name a color.",
    "Why that one?",
    "Name a fruit of that color.",
    "Is it sweet?",
    "Say it in one word.",
]
TURNS_PER_CHAT = len(QUESTIONS)  # then a new chat (a new session) begins
# The engine keeps MAX_SESSIONS chats' KV caches; until that pool is full, every new chat adds one
# (about 12 MB for the embedded model). Warm-up covers the filling, and one chat more.
WARMUP = TURNS_PER_CHAT * (MAX_SESSIONS + 1)


def slope(values: list[float]) -> float:
    """Least-squares slope of values over their index (units per turn)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den


def growth(values: list[float]) -> float:
    """Mean of the last tenth minus the mean of the first tenth (at least one reading each)."""
    k = max(1, len(values) // 10)
    return statistics.fmean(values[-k:]) - statistics.fmean(values[:k])


def summarize(samples: list[dict], key: str) -> dict:
    values = [s[key] for s in samples]
    return {
        "first_mb": values[0],
        "last_mb": values[-1],
        "max_mb": max(values),
        "slope_mb_per_turn": slope(values),
        "growth_mb": growth(values),
    }


def run(engine: Engine, turns: int, max_tokens: int, progress) -> list[dict]:
    samples = []
    history: list[dict] = []
    chat = 0
    for turn in range(turns):
        if turn % TURNS_PER_CHAT == 0:
            chat, history = chat + 1, []
        history.append({"role": "user", "content": QUESTIONS[turn % TURNS_PER_CHAT]})
        request = ChatRequest(list(history), session=f"soak-{chat}", max_tokens=max_tokens, temperature=0.7, seed=turn)
        result = engine.generate(request).collect()
        if result.error is not None:
            raise RuntimeError(f"turn {turn + 1}: {result.error.message}")
        history.append({"role": "assistant", "content": result.text})
        memory = engine.memory().collect().memory
        samples.append(
            {
                "turn": turn + 1,
                "chat": chat,
                "prompt_tokens": result.stats.prompt_tokens,
                "cached_tokens": result.stats.cached_tokens,
                "generation_tokens": result.stats.generation_tokens,
                "ttft_ms": result.stats.ttft_ms,
                "rss_mb": memory.rss_gb * 1000,
                "active_mb": memory.active_gb * 1000,
                "cache_mb": memory.cache_gb * 1000,
            }
        )
        progress(f"turn {turn + 1}/{turns}: rss {memory.rss_gb * 1000:.0f} MB, active {memory.active_gb * 1000:.1f} MB")
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model name or path (default: the embedded smollm2:135m)")
    parser.add_argument("--turns", type=int, default=200, help="chat turns (default 200)")
    parser.add_argument(
        "--warmup", type=int, default=WARMUP, help=f"first turns left out of the slopes (default {WARMUP})"
    )
    parser.add_argument("--max-tokens", type=int, default=16, help="tokens per answer (default 16)")
    parser.add_argument("--results-dir", default="benchmarks/results", help="where the result file is appended")
    args = parser.parse_args()
    if args.turns < args.warmup + 2:
        parser.error("--turns must exceed --warmup by at least 2")

    engine = Engine()
    loaded = store.load(engine, args.model).collect()
    if loaded.error:
        print(f"soak: {loaded.error.message}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    samples = run(engine, args.turns, args.max_tokens, lambda text: print(text, file=sys.stderr, flush=True))
    engine.shutdown()
    measured = samples[args.warmup :]
    result = {
        "name": "soak",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": loaded.loaded.name,
        "plan": {"turns": args.turns, "warmup": args.warmup, "max_tokens": args.max_tokens, "turns_per_chat": TURNS_PER_CHAT},
        "hardware": describe(),
        "rss": summarize(measured, "rss_mb"),
        "mlx_active": summarize(measured, "active_mb"),
        "mlx_cache": summarize(measured, "cache_mb"),
        "seconds": round(time.perf_counter() - started, 1),
        "samples": samples,
    }
    path = save(result, Path(args.results_dir), "soak")
    for label, key in (("RSS", "rss"), ("MLX active", "mlx_active"), ("MLX cache", "mlx_cache")):
        s = result[key]
        print(
            f"{label:11} {s['first_mb']:8.1f} -> {s['last_mb']:8.1f} MB (max {s['max_mb']:.1f}); "
            f"slope {s['slope_mb_per_turn']:+.3f} MB/turn; growth {s['growth_mb']:+.1f} MB "
            f"over turns {args.warmup + 1}-{args.turns}"
        )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
