"""`squish bench`: squish against mlx_lm (and llama.cpp with --anchor), same model, prompts, run.

squish runs twice per task: as it answers by default, with prompt-lookup drafts ("squish"), and
without them ("squish-plain"); a greedy answer is the same token for token either way.

Every side decodes greedily from the same rendered prompt (the token ids of mlx_lm's chat
template, which squish renders identically: the bench checks the counts). The sides alternate:
each round runs every task on every side, each side first equally often, the rounds' orders
shuffled (seeded): drift in the machine's load spreads over all of them, and a disturbance that
recurs with a period cannot fall on one side every round, as one every four requests did with
benchmarks/speculative.py's strict alternation (docs/speculative.md). Each side holds only its
own model (the baselines run in processes of their own, squish.cli.bench_sides), so peak memory is
each side's own. Times, as every side takes them: TTFT from the request to the first token,
prefill tok/s as prompt tokens over that time, decode tok/s as (tokens - 1) over the time from
the first token to the last. The decode comparison is paired by round: the ratio of medians
and a Wilcoxon signed-rank p-value (squish.cli.bench_stats).
"""

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from .bench_results import commit, save
from .bench_stats import round_orders, spread, wilcoxon
from .bench_tasks import BENCH_TASKS, SYSTEM, WARMUP
from .parser import UsageError, bench_parser

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
MIN_TOKENS = 64  # fewer generated tokens per run make a decode rate noise


@dataclass
class Plan:
    warmup: int
    runs: int
    max_tokens: int
    turns: int
    turn_tokens: int


QUICK = Plan(warmup=5, runs=6, max_tokens=64, turns=3, turn_tokens=8)
FULL = Plan(warmup=5, runs=20, max_tokens=128, turns=10, turn_tokens=16)
WARMUP_TOKENS = 4


def summarize_side(rows: list[dict]) -> dict:
    counts = [r["generated_tokens"] for r in rows]
    return {
        "runs": len(rows),
        "ttft_ms": spread([r["ttft_ms"] for r in rows]),
        "prefill_tps": spread([r["prefill_tps"] for r in rows]),
        "decode_tps": spread([r["decode_tps"] for r in rows]),
        "generated_tokens": {"min": min(counts), "max": max(counts)},
        "peak_memory_gb": max(r["peak_memory_gb"] for r in rows),
        "draft_tokens": sum(r["draft_tokens"] for r in rows),
        "accepted_tokens": sum(r["accepted_tokens"] for r in rows),
    }


def compare(mine: list[dict], theirs: list[dict]) -> dict:
    """`mine` against `theirs`, paired by round: ratios of medians, Wilcoxon on decode tok/s."""
    by_round = {r["round"]: r for r in theirs}
    pairs = [(m, by_round[m["round"]]) for m in mine if m["round"] in by_round]

    def ratio(key: str) -> float:
        a = spread([m[key] for m, _ in pairs])["p50"]
        b = spread([t[key] for _, t in pairs])["p50"]
        return a / b if b else 0.0

    return {
        "decode_ratio": ratio("decode_tps"),
        "prefill_ratio": ratio("prefill_tps"),
        "ttft_ratio": ratio("ttft_ms"),
        "decode_wilcoxon": wilcoxon([m["decode_tps"] for m, _ in pairs], [t["decode_tps"] for _, t in pairs]),
        "same_text": sum(m["text"] == t["text"] for m, t in pairs),
        "pairs": len(pairs),
    }


# "squish" decodes with prompt-lookup drafts (the engine's default), "squish-plain" without.
COMPARISONS = (("squish", "squish-plain"), ("squish", "mlx_lm"), ("squish", "llama.cpp"), ("squish-plain", "mlx_lm"))


def summarize(samples: list[dict], prompts: dict[str, list[int]]) -> dict:
    tasks = {}
    for task in BENCH_TASKS:
        rows = [s for s in samples if s["task"] == task.name]
        sides = {}
        for row in rows:
            sides.setdefault(row["side"], []).append(row)
        tasks[task.name] = {
            "prompt_tokens": len(prompts[task.name]),
            "copy": task.copy,
            "sides": {name: summarize_side(side_rows) for name, side_rows in sides.items()},
            "compare": {
                f"{a}/{b}": compare(sides[a], sides[b]) for a, b in COMPARISONS if a in sides and b in sides
            },
        }
    return tasks


def multi_turn(squish, plan: Plan, progress) -> dict:
    """squish alone: TTFT turn by turn in one chat, its KV cache kept between turns."""
    curve = []
    history = [{"role": "system", "content": SYSTEM}]
    for turn, text in enumerate(TURNS[: plan.turns], 1):
        progress(f"squish turn {turn}/{plan.turns}")
        history.append({"role": "user", "content": text})
        result = squish.request(list(history), plan.turn_tokens, session="bench")
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
    first, last = curve[0]["ttft_ms"], curve[-1]["ttft_ms"]
    return {"turns": curve, "last_over_first_ttft": last / first if first else 0.0}


def run(
    model: str | None,
    plan: Plan,
    label: str,
    anchor: str | None = None,
    gguf: Path | None = None,
    progress=lambda _: None,
) -> dict:
    from ..models.hardware import describe
    from .bench_sides import LLAMA_CPP_PACKAGE, SquishSide, llama_cpp_worker, mlx_lm_worker

    started = time.perf_counter()
    threads = os.cpu_count() or 1
    progress("loading squish")
    squish = SquishSide(model)
    workers = {}
    try:
        progress("starting mlx_lm")
        workers["mlx_lm"] = mlx_lm_worker(squish.info.path)
        if anchor:
            progress("starting llama.cpp (a first start builds llama-cpp-python: about 12 minutes)")
            workers["llama.cpp"] = llama_cpp_worker(gguf, threads)
        prompts = {task.name: workers["mlx_lm"].render(task.messages()) for task in (*BENCH_TASKS, WARMUP)}

        def side(name: str):
            if name in ("squish", "squish-plain"):
                return lambda task, n: squish.generate(task.messages(), n, draft=name == "squish")
            return lambda task, n: workers[name].generate(prompts[task.name], n)

        names = ["squish", "squish-plain", *workers]
        sides = {name: side(name) for name in names}
        for i, order in enumerate(round_orders(names, plan.warmup)):
            for name in order:
                progress(f"warm-up {i + 1}/{plan.warmup}: {name}")
                sides[name](WARMUP, WARMUP_TOKENS)
        samples = []
        for r, order in enumerate(round_orders(names, plan.runs)):
            for task in BENCH_TASKS:
                for name in order:
                    progress(f"round {r + 1}/{plan.runs}: {task.name} on {name}")
                    sample = sides[name](task, plan.max_tokens)
                    if sample.prompt_tokens != len(prompts[task.name]):
                        raise RuntimeError(
                            f"{name} saw {sample.prompt_tokens} prompt tokens for {task.name}, "
                            f"mlx_lm rendered {len(prompts[task.name])}: the sides would not run the same prompt"
                        )
                    samples.append({"round": r, "task": task.name, "side": name, **asdict(sample)})
        curve = multi_turn(squish, plan, progress)
    finally:
        for worker in workers.values():
            worker.close()
        squish.close()
    info = squish.info
    versions = {"squish": "", "squish-plain": "", **{name: w.version for name, w in workers.items()}}
    return {
        "name": label,
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "model": info.name,
        "quantization": info.quantization,
        "kernels": info.kernels,
        "plan": asdict(plan),
        "hardware": {**describe(), "threads": threads},
        "sides": {
            name: {"version": version}
            | ({"package": LLAMA_CPP_PACKAGE, "gguf": str(gguf), "threads": threads} if name == "llama.cpp" else {})
            for name, version in versions.items()
        },
        "tasks": summarize(samples, prompts),
        "samples": samples,
        "multi_turn": curve,
        "seconds": time.perf_counter() - started,
    }


def summary(result: dict) -> dict:
    """The `squish bench --json` object: per task, each side's medians and the comparisons."""
    tasks = {}
    for name, task in result["tasks"].items():
        tasks[name] = {
            "prompt_tokens": task["prompt_tokens"],
            "sides": {
                side: {
                    "ttft_ms_p50": s["ttft_ms"]["p50"],
                    "prefill_tps": s["prefill_tps"]["p50"],
                    "decode_tps": s["decode_tps"]["p50"],
                    "peak_memory_gb": s["peak_memory_gb"],
                    "draft_tokens": s["draft_tokens"],
                    "accepted_tokens": s["accepted_tokens"],
                }
                for side, s in task["sides"].items()
            },
            "compare": {
                pair: {
                    "decode_ratio": c["decode_ratio"],
                    "prefill_ratio": c["prefill_ratio"],
                    "decode_p_value": c["decode_wilcoxon"]["p_value"],
                    "same_text": c["same_text"],
                    "pairs": c["pairs"],
                }
                for pair, c in task["compare"].items()
            },
        }
    return {"model": result["model"], "kernels": result["kernels"], "tasks": tasks}


def table(result: dict) -> str:
    hw, plan = result["hardware"], result["plan"]
    llama = result["sides"].get("llama.cpp")
    lines = [
        f"model {result['model']} ({result['quantization']}, kernels {result['kernels']}) on {hw['backend']} "
        f"({hw['chip']}, {hw['cores']} cores), mlx {hw['mlx']}, mlx-lm {hw['mlx_lm']}"
        + (f", llama-cpp-python {llama['version']} ({llama['threads']} threads)" if llama else ""),
        f"{plan['runs']} interleaved rounds after {plan['warmup']} warm-ups, up to {plan['max_tokens']} "
        "greedy tokens a run; p50 (stddev)",
    ]
    for name, task in result["tasks"].items():
        sides = list(task["sides"])
        lines.append("")
        lines.append(f"{name} ({task['prompt_tokens']} prompt tokens)".ljust(26) + "".join(f"{s:>18}" for s in sides))

        def row(label: str, cell) -> str:
            return f"  {label:24}" + "".join(f"{cell(task['sides'][s]):>18}" for s in sides)

        lines.append(row("TTFT ms p50/p95/p99", lambda s: "{p50:.0f}/{p95:.0f}/{p99:.0f}".format(**s["ttft_ms"])))
        lines.append(row("prefill tok/s", lambda s: "{p50:.1f} ({stddev:.1f})".format(**s["prefill_tps"])))
        lines.append(row("decode tok/s", lambda s: "{p50:.2f} ({stddev:.2f})".format(**s["decode_tps"])))
        lines.append(row("decode p95/p99", lambda s: "{p95:.2f}/{p99:.2f}".format(**s["decode_tps"])))
        lines.append(row("tokens min-max", lambda s: "{min}-{max}".format(**s["generated_tokens"])))
        lines.append(row("peak memory GB", lambda s: f"{s['peak_memory_gb']:.3f}"))
        lines.append(
            row("drafts kept", lambda s: f"{s['accepted_tokens']}/{s['draft_tokens']}" if s["draft_tokens"] else "-")
        )
        for pair, c in task["compare"].items():
            w = c["decode_wilcoxon"]
            lines.append(
                f"  {pair}: decode {c['decode_ratio']:.2f}x (Wilcoxon p={w['p_value']:.3g}, n={w['n']}), "
                f"prefill {c['prefill_ratio']:.2f}x, TTFT {c['ttft_ratio']:.2f}x, "
                f"same text {c['same_text']}/{c['pairs']}"
            )
    curve = result["multi_turn"]
    ttfts = " ".join(f"{t['ttft_ms']:.0f}" for t in curve["turns"])
    lines.append("")
    lines.append(f"multi-turn TTFT (ms, squish, KV cache kept): {ttfts}")
    lines.append(f"last turn / first turn TTFT: {curve['last_over_first_ttft']:.2f}")
    return "\n".join(lines)


def anchor_gguf(args) -> Path | None:
    """The GGUF llama.cpp runs: --gguf, else the embedded model's own file."""
    if not args.anchor:
        return None
    if args.gguf:
        path = Path(args.gguf).expanduser()
        if not path.is_file():
            raise UsageError(f"--gguf {args.gguf}: no such file")
        return path
    from ..models import store
    from ..models.catalog import EMBEDDED_NAME

    if args.model not in (None, EMBEDDED_NAME):
        raise UsageError("--anchor llama.cpp needs the model's GGUF file: pass --gguf PATH")
    return store.embedded_gguf()


def bench(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    if args.warmup is not None and args.warmup < 5:
        raise UsageError("--warmup must be at least 5")
    if args.turns is not None and not 2 <= args.turns <= 10:
        raise UsageError("--turns must be between 2 and 10")
    if args.runs is not None and args.runs < 2:
        raise UsageError("--runs must be at least 2")
    if args.max_tokens is not None and args.max_tokens < MIN_TOKENS:
        raise UsageError(f"--max-tokens must be at least {MIN_TOKENS}: fewer make the decode rate noise")
    gguf = anchor_gguf(args)
    base = QUICK if args.quick else FULL
    overrides = {"runs": args.runs, "warmup": args.warmup, "max_tokens": args.max_tokens, "turns": args.turns}
    plan = Plan(**{**asdict(base), **{k: v for k, v in overrides.items() if v is not None}})

    def progress(text: str) -> None:
        if sys.stderr.isatty():
            print(f"\r\033[2K{text}", end="", file=sys.stderr, flush=True)

    result = run(args.model, plan, "quick" if args.quick else "full", args.anchor, gguf, progress)
    if sys.stderr.isatty():
        print("\r\033[2K", end="", file=sys.stderr, flush=True)
    path = save(result, Path(args.results_dir), f"bench-{result['name']}")
    if args.json:
        print(json.dumps(summary(result)))
    else:
        print(table(result))
        print(f"saved {path}")
    return 0
