"""Prompt-lookup drafts against plain decoding: same engine, model, prompts and run (issue 11).

Each round runs a task twice, plain (`ChatRequest(draft=False)`) and with drafts (the default),
plain first in half the rounds and drafts first in the other half, in a shuffled (seeded) order,
greedy unless --temp is given; a task's rounds run back to back in one session, so its prompt is
prefilled once (decode is what is compared). Per task: decode tok/s p50/p95/p99 and stddev of
both, the ratio of the medians, a Wilcoxon signed-rank p-value of the paired rates, how many
rounds gave the same text token for token, and the drafts' acceptance. Bars: echo-heavy tasks >=
1.5x plain decoding with identical greedy output; tasks with nothing to copy >= 0.97x.

Why shuffled: with the order strictly alternating (plain, drafts | drafts, plain | ...) the
requests ran P D D P P D D P, so anything on the machine that came and went every four requests
(about 10 s here) fell on one side every round. On 2026-12-02 two runs of story, which drafts
almost nothing, read 0.95x (p 0.002, all 10 pairs below 1) and 1.05x (p 0.008, all 8 above),
the per-request rates swinging with that period (docs/speculative.md).

    uv run python benchmarks/speculative.py [--runs 6] [--warmup 5] [--max-tokens 256] [--tasks edit,story]
    SQUISH_NATIVE=off uv run python benchmarks/speculative.py    # the stock MLX path

Results are appended to benchmarks/results/<timestamp>_speculative.json.
"""

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from squish.agent import constrain
from squish.agent.prompt import call_text, system_prompt
from squish.agent.tools import builtin_tools
from squish.cli.bench_results import commit, save
from squish.cli.bench_stats import round_orders, spread, wilcoxon
from squish.cli.bench_tasks import EDIT, LETTER, LONG, QUOTE, SHORT, SOURCE, STORY, WARMUP
from squish.engine.engine import ChatRequest, Engine
from squish.models import store
from squish.models.hardware import describe

ECHO_BAR, NOVEL_BAR = 1.5, 0.97


def agent_edit_messages() -> list[dict]:
    """An agent's second step: it has read rain.py and now writes the edit_file call (constrained)."""
    tools = builtin_tools()
    return [
        {"role": "system", "content": system_prompt(tools, template_tools=False)},
        {"role": "user", "content": "In rain.py, rename the function parse_line to parse_row."},
        {"role": "assistant", "content": call_text("read_file", {"path": "rain.py"})},
        {"role": "tool", "content": f"<tool_response>\n{SOURCE}\n</tool_response>"},
    ]


def requests(max_tokens: int, temperature: float) -> dict:
    """Task name -> (ChatRequest keyword arguments, whether the answer can be copied from the prompt)."""
    common = {"max_tokens": max_tokens, "temperature": temperature, "seed": 0}
    tasks = {t.name: ({"messages": t.messages(), **common}, t.copy) for t in (EDIT, QUOTE, LONG, SHORT, STORY, LETTER)}
    factory = constrain.processor_factory(builtin_tools(), lazy=False, min_calls=0)
    tasks["agent_edit"] = ({"messages": agent_edit_messages(), "processor_factory": factory, **common}, True)
    return tasks


def generate(engine, kwargs: dict, draft: bool):
    result = engine.generate(ChatRequest(**kwargs, draft=draft)).collect()
    if result.error is not None:
        raise SystemExit(f"speculative: {result.error.message}")
    s = result.stats
    return {
        "decode_tps": s.decode_tps,
        "ttft_ms": s.ttft_ms,
        "generated_tokens": s.generation_tokens,
        "draft_tokens": s.draft_tokens,
        "accepted_tokens": s.accepted_tokens,
        "finish_reason": s.finish_reason,
        "text": result.text,
    }


def summarize(rows: list[dict], copy: bool) -> dict:
    plain = [r["plain"] for r in rows]
    drafted = [r["draft"] for r in rows]
    plain_tps, draft_tps = [p["decode_tps"] for p in plain], [d["decode_tps"] for d in drafted]
    ratio = spread(draft_tps)["p50"] / spread(plain_tps)["p50"] if spread(plain_tps)["p50"] else 0.0
    draft_tokens = sum(d["draft_tokens"] for d in drafted)
    accepted = sum(d["accepted_tokens"] for d in drafted)
    identical = sum(p["text"] == d["text"] for p, d in zip(plain, drafted))
    bar = ECHO_BAR if copy else NOVEL_BAR
    return {
        "copy": copy,
        "plain_decode_tps": spread(plain_tps),
        "draft_decode_tps": spread(draft_tps),
        "ratio": ratio,
        "paired_ratio_p50": spread([d / p for d, p in zip(draft_tps, plain_tps) if p])["p50"],
        "wilcoxon": wilcoxon(draft_tps, plain_tps),
        "identical": identical,
        "runs": len(rows),
        "generated_tokens": [d["generated_tokens"] for d in drafted],
        "draft_tokens": draft_tokens,
        "accepted_tokens": accepted,
        "acceptance_rate": accepted / draft_tokens if draft_tokens else 0.0,
        "bar": bar,
        "meets_bar": ratio >= bar and identical == len(rows),
    }


def run(args) -> dict:
    engine = Engine()
    loaded = store.load(engine, args.model).collect()
    if loaded.error:
        raise SystemExit(f"speculative: {loaded.error.message}")
    info = loaded.loaded
    tasks = requests(args.max_tokens, args.temp)
    chosen = args.tasks.split(",") if args.tasks else list(tasks)
    unknown = set(chosen) - set(tasks)
    if unknown:
        raise SystemExit(f"speculative: unknown tasks {sorted(unknown)}; there are {sorted(tasks)}")
    warm = {"messages": WARMUP.messages(), "max_tokens": 8, "temperature": 0.0}
    for i in range(args.warmup):
        print(f"warm-up {i + 1}/{args.warmup}", file=sys.stderr)
        generate(engine, warm, draft=bool(i % 2))
    rows = {name: [] for name in chosen}
    for name in chosen:
        # One session per task: its prompt is prefilled once and every later run reuses the KV cache
        # (trimmed back to the prompt), so a round costs its decoding, which is what is compared.
        kwargs = {**tasks[name][0], "session": f"speculative-{name}"}
        for r, order in enumerate(round_orders([False, True], args.runs, args.order_seed)):  # draft?
            print(f"{name}: round {r + 1}/{args.runs}", file=sys.stderr)
            sample = {("draft" if draft else "plain"): generate(engine, kwargs, draft) for draft in order}
            rows[name].append({"round": r, "first": "draft" if order[0] else "plain", **sample})
    engine.shutdown()
    return {
        "name": "speculative",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "commit": commit(),
        "model": info.name,
        "kernels": info.kernels,
        "plan": {"runs": args.runs, "warmup": args.warmup, "max_tokens": args.max_tokens, "temperature": args.temp,
                 "order_seed": args.order_seed},
        "hardware": describe(),
        "tasks": {name: summarize(task_rows, tasks[name][1]) for name, task_rows in rows.items()},
        "samples": rows,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model name or path (default: the embedded model)")
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--temp", type=float, default=0.0, help="sampling temperature (default 0: greedy)")
    parser.add_argument("--tasks", help="comma-separated task names (default: all)")
    parser.add_argument("--order-seed", type=int, default=0, help="seed of the rounds' shuffled order")
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    if args.warmup < 5:
        parser.error("--warmup must be at least 5")
    result = run(args)
    path = save(result, Path(args.results_dir), "speculative")
    print(f"{result['model']} on {result['kernels']}, {args.runs} rounds, up to {args.max_tokens} tokens")
    print(f"{'task':12}{'plain tok/s':>13}{'drafts tok/s':>14}{'ratio':>8}{'p':>8}{'same':>7}{'accepted':>16}  bar")
    for name, t in result["tasks"].items():
        print(
            f"{name:12}{t['plain_decode_tps']['p50']:>13.2f}{t['draft_decode_tps']['p50']:>14.2f}"
            f"{t['ratio']:>8.2f}{t['wilcoxon']['p_value']:>8.3f}{t['identical']:>4}/{t['runs']:<2}"
            f"{t['accepted_tokens']:>8}/{t['draft_tokens']:<7} {'>=' if t['meets_bar'] else '< '}{t['bar']}"
        )
    print(f"saved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
