"""Decode speed with tool-call constrained decoding active, against plain decoding, same run.

Both sides use the same prompt, model, max_tokens and greedy sampling; runs alternate between
the sides, each first in half the rounds in a shuffled order (round_orders), so that load on the
machine hits both alike. The constrained side forces the reply into a tool call whose one
argument is a long string (minLength far past max_tokens), so the llguidance mask is computed
and applied on every generated token. Bar: constrained decode tok/s >= 90% of plain.

    uv run python benchmarks/constrained_decode.py [--model NAME] [--runs 10] [--warmup 5] [--max-tokens 48]

Results are appended to benchmarks/results/<timestamp>_constrained-decode.json.
"""

import argparse
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from squish.agent import constrain
from squish.agent.tools import Tool
from squish.cli.bench_results import save
from squish.cli.bench_stats import percentile, round_orders, spread
from squish.engine.engine import ChatRequest, Engine
from squish.models import store
from squish.models.hardware import describe

NOTE = Tool(
    "save_note",
    "Save a note.",
    {
        "type": "object",
        "properties": {"text": {"type": "string", "minLength": 4000}},
        "required": ["text"],
        "additionalProperties": False,
    },
)
MESSAGES = [
    {"role": "system", "content": "You write long, detailed notes."},
    {"role": "user", "content": "Write a long note about the history of cats."},
]


def summarize(values: list[float]) -> dict:
    return {**spread(values), "runs": values}


class Timed:
    """A logits processor, timed: the microseconds it spends matching and masking, per step.

    The token of the previous step is read first (`.item()` waits for the model to compute it),
    so the time counted is the constraint's own, not the model's.
    """

    def __init__(self, processor) -> None:
        self.processor, self.busy_s, self.steps = processor, 0.0, 0

    def __call__(self, tokens, logits):
        tokens[-1].item()
        began = time.perf_counter()
        out = self.processor(tokens, logits)
        self.busy_s += time.perf_counter() - began
        self.steps += 1
        return out


def generate(engine, max_tokens: int, constrained: bool) -> tuple[float, int, float]:
    """(decode tok/s, tokens, constraint microseconds per token) of one greedy generation."""
    made: list[Timed] = []
    factory = None
    if constrained:
        build = constrain.processor_factory([NOTE], lazy=False, min_calls=1)

        def factory(tokenizer) -> list:
            made.extend(Timed(processor) for processor in build(tokenizer))
            return list(made)

    result = engine.generate(
        ChatRequest(MESSAGES, max_tokens=max_tokens, temperature=0.0, seed=0, processor_factory=factory)
    ).collect()
    if result.error is not None:
        sys.exit(f"generation failed: {result.error.message}")
    busy_us = 0.0
    if constrained:
        timed = made[0]
        if timed.processor.error:
            sys.exit(f"the constraint failed: {timed.processor.error}")
        busy_us = timed.busy_s / max(timed.steps, 1) * 1e6
    return result.stats.decode_tps, result.stats.generation_tokens, busy_us


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model name or path (default: the embedded smollm2:135m)")
    parser.add_argument("--runs", type=int, default=10, help="measured runs per side")
    parser.add_argument("--warmup", type=int, default=5, help="discarded warm-up runs per side (at least 5)")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--results-dir", default="benchmarks/results")
    args = parser.parse_args()
    if args.warmup < 5:
        parser.error("--warmup must be at least 5")

    engine = Engine()
    loaded = store.load(engine, args.model).collect()
    if loaded.error is not None:
        sys.exit(loaded.error.message)
    for i in range(args.warmup):
        print(f"warm-up {i + 1}/{args.warmup}", file=sys.stderr, flush=True)
        generate(engine, args.max_tokens, False)
        generate(engine, args.max_tokens, True)
    plain, constrained, tokens, busy = [], [], [], []
    for i, order in enumerate(round_orders([False, True], args.runs)):  # constrained?
        print(f"run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
        runs = {side: generate(engine, args.max_tokens, side) for side in order}
        (tps, n, _), (tps_constrained, n_constrained, us) = runs[False], runs[True]
        plain.append(tps)
        constrained.append(tps_constrained)
        tokens.append((n, n_constrained))
        busy.append(us)
    ratio = percentile(constrained, 50) / percentile(plain, 50)
    result = {
        "name": "constrained-decode",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": loaded.loaded.name,
        "quantization": loaded.loaded.quantization,
        "hardware": describe(),
        "plan": {"warmup": args.warmup, "runs": args.runs, "max_tokens": args.max_tokens, "sampling": "greedy"},
        "plain_decode_tps": summarize(plain),
        "constrained_decode_tps": summarize(constrained),
        "constraint_us_per_token": summarize(busy),
        "tokens_per_run": tokens,
        "ratio_p50": ratio,
        "bar": 0.9,
        "passes": ratio >= 0.9,
    }
    path = save(result, Path(args.results_dir), "constrained-decode")
    print(
        f"decode tok/s p50: plain {percentile(plain, 50):.2f}, constrained {percentile(constrained, 50):.2f} "
        f"(ratio {ratio:.3f}, bar 0.90: {'pass' if ratio >= 0.9 else 'FAIL'}); "
        f"constraint {percentile(busy, 50):.0f} us/token; saved {path}"
    )
    return 0 if ratio >= 0.9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
