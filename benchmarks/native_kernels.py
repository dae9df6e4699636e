"""Native CPU kernels against stock MLX, measured in the same process, interleaved.

Two parts, both A/B, each side first in half the runs in a shuffled order (robust to a machine
shared with other work; absolute numbers still move with the load, so read the ratios):
  ops     each kernel against its stock MLX equivalent on the embedded model's shapes;
  model   the embedded model loaded twice, stock mlx-lm and squish's native path: prefill of a
          short and a ~500-token prompt, then greedy decode with the engine's pipelining
          (the next step is built while the current one runs).
Every run's numbers are kept; the summary gives p50/p95/p99 and stddev; results are appended
to benchmarks/results/<timestamp>_native-kernels.json with the hardware and the kernel path.

    uv run python benchmarks/native_kernels.py                  # official: idle machine
    uv run python benchmarks/native_kernels.py --quick --prompts short   # a short check that it runs
"""

import argparse
import os
import statistics
import time
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

import squish_native
from squish.cli.bench_results import save
from squish.cli.bench_stats import round_orders
from squish.engine import native
from squish.models import store
from squish.models.hardware import describe

SHORT = "What is the capital of France?"
LONG = " ".join(
    f"Section {i}: the committee reviewed the budget, the schedule and the staffing plan, and asked for a revision."
    for i in range(22)
) + " Summarize the sections above in one sentence."


def stats(values: list[float]) -> dict:
    ordered = sorted(values)

    def pct(q):
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99),
        "mean": statistics.fmean(values), "stddev": statistics.pstdev(values), "n": len(values),
    }


def timed(fn, reps: int) -> float:
    """Milliseconds per call, the result evaluated each time."""
    start = time.perf_counter()
    for _ in range(reps):
        mx.eval(fn())
    return (time.perf_counter() - start) / reps * 1e3


def op_cases():
    mx.random.seed(0)
    cases = {}
    for n, k, bits in [(1536, 576, 4), (576, 1536, 4), (49152, 576, 8)]:
        w = mx.random.normal((n, k)) * 0.05
        wq, s, b = mx.quantize(w, group_size=32, bits=bits)
        s16, b16 = s.astype(mx.float16), b.astype(mx.float16)
        for m in (1, 128):
            x = mx.random.normal((m, k))
            mx.eval(x, wq, s16, b16)
            cases[f"qmm {n}x{k} q{bits} m={m}"] = (
                lambda x=x, wq=wq, s=s16, b=b16, bits=bits: mx.quantized_matmul(
                    x, wq, s.astype(mx.float32), b.astype(mx.float32), transpose=True, group_size=32, bits=bits),
                lambda x=x, wq=wq, s=s16, b=b16, bits=bits: squish_native.quantized_matmul(x, wq, s, b, 32, bits),
            )
    x, wn = mx.random.normal((1, 576)), mx.random.normal((576,))
    cases["rms_norm 576"] = (lambda: mx.fast.rms_norm(x, wn, 1e-5), lambda: squish_native.rms_norm(x, wn, 1e-5))
    q = mx.random.normal((1, 9, 1, 64))
    cases["rope 9x64"] = (
        lambda: mx.fast.rope(q, 64, traditional=True, base=1e5, scale=1.0, offset=300),
        lambda: squish_native.rope(q, 64, traditional=True, base=1e5, scale=1.0, offset=300),
    )
    keys, values = mx.random.normal((1, 3, 512, 64)), mx.random.normal((1, 3, 512, 64))
    cases["attention 9/3 heads, 512 cached"] = (
        lambda: mx.fast.scaled_dot_product_attention(q, keys, values, scale=0.125),
        lambda: squish_native.attention(q, keys, values, 512, 0.125),
    )
    g, u = mx.random.normal((1, 1536)), mx.random.normal((1, 1536))
    cases["swiglu 1536"] = (lambda: nn.silu(g) * u, lambda: squish_native.swiglu(g, u))
    return cases


def bench_ops(runs: int, reps: int) -> dict:
    out = {}
    for name, (stock, fast) in op_cases().items():
        r = max(1, reps // 20) if "m=128" in name or "49152" in name else reps
        timed(stock, 2), timed(fast, 2)
        a, b = [], []
        for order in round_orders([(stock, a), (fast, b)], runs):
            for fn, times in order:
                times.append(timed(fn, r))
        out[name] = {"stock_ms": stats(a), "native_ms": stats(b), "speedup_p50": stats(a)["p50"] / stats(b)["p50"]}
        print(f"{name:38s} stock {out[name]['stock_ms']['p50']:8.3f} ms  native {out[name]['native_ms']['p50']:7.3f} ms"
              f"  x{out[name]['speedup_p50']:.1f}", flush=True)
    return out


def generate(model, ids: list[int], tokens: int) -> tuple[float, float, float]:
    """(prefill tok/s, decode tok/s, TTFT ms) of one greedy answer, pipelined like the engine."""
    from mlx_lm.models.cache import make_prompt_cache

    cache = make_prompt_cache(model)
    mx.reset_peak_memory()
    start = time.perf_counter()
    y = mx.argmax(model(mx.array(ids)[None], cache=cache)[:, -1], axis=-1)
    mx.eval(y)
    first = time.perf_counter()
    for _ in range(tokens - 1):
        nxt = mx.argmax(model(y[None], cache=cache)[:, -1], axis=-1)
        mx.async_eval(nxt)
        y.item()
        y = nxt
    y.item()
    end = time.perf_counter()
    return len(ids) / (first - start), (tokens - 1) / (end - first), (first - start) * 1e3


def bench_model(home: Path | None, runs: int, warmup: int, tokens: int, labels: list[str]) -> dict:
    from mlx_lm.utils import load

    path = str(store.resolve(None, home).path)
    stock, tokenizer = load(path)
    fast, _ = load(path)
    kernels = native.prepare(fast)
    prompts = {label: {"short": SHORT, "long": LONG}[label] for label in labels}
    result = {"kernels": kernels, "tokens": tokens}
    for label, prompt in prompts.items():
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True)
        sides = {"stock": stock, "native": fast}
        rows = {name: {"prefill_tps": [], "decode_tps": [], "ttft_ms": [], "peak_gb": []} for name in sides}
        for i, order in enumerate(round_orders(list(sides), warmup + runs)):
            for name in order:
                prefill, decode, ttft = generate(sides[name], ids, tokens)
                if i >= warmup:
                    for key, value in zip(("prefill_tps", "decode_tps", "ttft_ms"), (prefill, decode, ttft)):
                        rows[name][key].append(value)
                    rows[name]["peak_gb"].append(mx.get_peak_memory() / 1e9)
        summary = {name: {key: stats(values) for key, values in r.items()} for name, r in rows.items()}
        summary["prompt_tokens"] = len(ids)
        summary["prefill_ratio_p50"] = summary["native"]["prefill_tps"]["p50"] / summary["stock"]["prefill_tps"]["p50"]
        summary["decode_ratio_p50"] = summary["native"]["decode_tps"]["p50"] / summary["stock"]["decode_tps"]["p50"]
        summary["runs"] = rows
        result[label] = summary
        print(f"{label} prompt ({len(ids)} tokens): prefill stock {summary['stock']['prefill_tps']['p50']:.1f} "
              f"native {summary['native']['prefill_tps']['p50']:.1f} tok/s (x{summary['prefill_ratio_p50']:.1f}); "
              f"decode stock {summary['stock']['decode_tps']['p50']:.1f} native {summary['native']['decode_tps']['p50']:.1f} "
              f"tok/s (x{summary['decode_ratio_p50']:.1f}); TTFT native {summary['native']['ttft_ms']['p50']:.0f} ms",
              flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few runs and tokens: checks that it works")
    parser.add_argument("--runs", type=int, help="measured runs per side (10; --quick 2)")
    parser.add_argument("--warmup", type=int, default=5, help="discarded runs per side (at least 5)")
    parser.add_argument("--tokens", type=int, help="generated tokens per answer (64; --quick 16)")
    parser.add_argument("--skip-model", action="store_true", help="the op table only")
    parser.add_argument("--prompts", nargs="+", choices=("short", "long"), default=["short", "long"])
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if args.warmup < 5:
        parser.error("--warmup must be at least 5")
    runs = args.runs or (2 if args.quick else 10)
    tokens = args.tokens or (16 if args.quick else 64)
    result = {
        "hardware": describe(),
        "native_isa": squish_native.isa(),
        "threads": squish_native.threads(),
        "quick": args.quick,
        "load_average_at_start": os.getloadavg(),
        "ops": bench_ops(runs=max(runs, 4), reps=20 if args.quick else 100),
    }
    if not args.skip_model:
        result["model"] = bench_model(None, runs, args.warmup, tokens, args.prompts)
    result["load_average_at_end"] = os.getloadavg()
    print(f"saved {save(result, args.results, 'native-kernels')}")


if __name__ == "__main__":
    main()
