"""The mlx_lm side of `squish bench`: mlx_lm.stream_generate on the same model and prompts.

It calls MLX, so it lives here; the orchestration and the result file are squish.cli.bench.
"""

import gc
import time

from .memory import GB


def run_mlx_lm(model_dir: str, warmups: list, runs: list, progress) -> tuple[list[float], list[float], float]:
    """(TTFT ms per run, decode tok/s per run, peak GB) for (messages, max_tokens) runs after warm-ups."""
    import mlx.core as mx
    from mlx_lm import load, stream_generate
    from mlx_lm.sample_utils import make_sampler

    gc.collect()
    mx.clear_cache()
    mx.reset_peak_memory()
    model, tokenizer = load(model_dir)
    greedy = make_sampler(temp=0.0)

    def generate(messages, max_tokens):
        start = time.perf_counter()
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        times = []
        for _ in stream_generate(model, tokenizer, prompt, max_tokens=max_tokens, sampler=greedy):
            times.append(time.perf_counter())
        ttft = (times[0] - start) * 1000
        decode_s = times[-1] - times[0]
        return ttft, (len(times) - 1) / decode_s if len(times) > 1 and decode_s > 0 else 0.0

    for i, (messages, max_tokens) in enumerate(warmups):
        progress(f"mlx_lm warm-up {i + 1}/{len(warmups)}")
        generate(messages, max_tokens)
    ttft, tps = [], []
    for i, (messages, max_tokens) in enumerate(runs):
        progress(f"mlx_lm run {i + 1}/{len(runs)}")
        t, d = generate(messages, max_tokens)
        ttft.append(t)
        tps.append(d)
    peak = mx.get_peak_memory() / GB
    gc.collect()
    mx.clear_cache()
    return ttft, tps, peak
