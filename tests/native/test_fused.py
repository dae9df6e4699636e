"""Fused native ops against mx.fast, and the decoder-layer primitive against mlx-lm's blocks.

Tiny quantized llama / qwen2 / qwen3 models with seeded random weights: the native forward
pass (one node per layer) must give stock MLX's logits, in prefill, chunked prefill (the shape
of k-token verification), decode, after trimming the cache, and after a save/load round trip.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm.models.cache import RotatingKVCache

squish_native = pytest.importorskip("squish_native")
pytestmark = pytest.mark.skipif(not squish_native.AVAILABLE, reason=f"no native module: {squish_native.reason}")

from squish.engine import native  # noqa: E402

ISAS = squish_native.supported_isas() if squish_native.AVAILABLE else []


@pytest.fixture
def each_isa():
    def paths():
        for name in ISAS:
            squish_native.set_isa(name)
            yield name

    yield paths
    squish_native.set_isa("auto")


def close(a, b, rel=1e-5):
    a, b = np.array(a), np.array(b)
    return np.abs(a - b).max() <= rel * max(1.0, np.abs(b).max())


def test_rms_norm_and_swiglu_match_mlx(each_isa):
    mx.random.seed(0)
    x, w = mx.random.normal((3, 5, 576)), mx.random.normal((576,))
    g, u = mx.random.normal((2, 1536)) * 4, mx.random.normal((2, 1536))
    for name in each_isa():
        assert close(squish_native.rms_norm(x, w, 1e-5), mx.fast.rms_norm(x, w, 1e-5)), name
        assert close(squish_native.swiglu(g, u), nn.silu(g) * u), name


def test_rms_norm_reads_a_strided_view():
    x, w = mx.random.normal((8, 6, 64)), mx.random.normal((64,))
    view = x.transpose(1, 0, 2)  # last axis contiguous, rows not
    assert close(squish_native.rms_norm(view, w, 1e-6), mx.fast.rms_norm(view, w, 1e-6))


@pytest.mark.parametrize("traditional", [True, False])
@pytest.mark.parametrize("dims", [64, 32])
def test_rope_matches_mlx(each_isa, traditional, dims):
    mx.random.seed(1)
    x = mx.random.normal((1, 9, 6, 64))
    for name in each_isa():
        for offset in (0, 37):
            ours = squish_native.rope(x, dims, traditional=traditional, base=100000.0, scale=1.0, offset=offset)
            ref = mx.fast.rope(x, dims, traditional=traditional, base=100000.0, scale=1.0, offset=offset)
            assert close(ours, ref), (name, offset)


@pytest.mark.parametrize(
    "T,L,hd",
    [(1, 1, 64), (1, 300, 64), (4, 4, 64), (7, 50, 64), (16, 100, 64), (21, 300, 64), (5, 70, 40),
     (9, 130, 128), (6, 70, 96)],  # 128 and 96: the value sums of 2 queries at a time
)
def test_causal_gqa_attention_matches_mlx(each_isa, T, L, hd):
    mx.random.seed(2)
    q = mx.random.normal((1, 9, T, hd))
    keys, values = mx.random.normal((1, 3, 512, hd)), mx.random.normal((1, 3, 512, hd))
    mask = mx.array(np.arange(L)[None, :] <= (L - T + np.arange(T))[:, None])
    ref = mx.fast.scaled_dot_product_attention(q, keys[:, :, :L], values[:, :, :L], scale=0.125, mask=mask)
    for name in each_isa():
        assert close(squish_native.attention(q, keys, values, L, 0.125), ref), name


def test_an_attention_row_is_the_same_checked_in_a_pass_of_many_as_alone(each_isa):
    # Speculative decoding is lossless only if the row of a draft checked among others is, bit for
    # bit, the row a plain step would compute: queries share blocks of keys, never arithmetic.
    # Values are summed for 4 queries at once (2 for heads of 128): L = 258 puts a key block's
    # start (256) between the causal ends of the queries of one such group.
    mx.random.seed(3)
    for L, T, hd in ((211, 9, 64), (258, 9, 64), (258, 17, 64), (258, 9, 128)):  # blocks end mid-pass
        keys, values = mx.random.normal((1, 3, 320, hd)), mx.random.normal((1, 3, 320, hd))
        q = mx.random.normal((1, 9, T, hd))
        for name in each_isa():
            together = np.array(squish_native.attention(q, keys, values, L, 0.125))
            for t in range(T):
                row = mx.contiguous(q[:, :, t : t + 1])
                alone = np.array(squish_native.attention(row, keys, values, L - T + t + 1, 0.125))
                assert np.array_equal(together[:, :, t : t + 1], alone), (name, L, T, t)


def test_op_contracts():
    with pytest.raises(ValueError, match="weight must have shape"):
        squish_native.rms_norm(mx.zeros((2, 8)), mx.zeros((7,)), 1e-5)
    with pytest.raises(ValueError, match="must be float32"):
        squish_native.swiglu(mx.zeros((2,), dtype=mx.float16), mx.zeros((2,), dtype=mx.float16))
    with pytest.raises(ValueError, match="dims must be even"):
        squish_native.rope(mx.zeros((1, 1, 2, 8)), 9, traditional=True, base=1e4)
    with pytest.raises(ValueError, match="kv_len"):
        squish_native.attention(mx.zeros((1, 2, 3, 8)), mx.zeros((1, 1, 4, 8)), mx.zeros((1, 1, 4, 8)), 5, 1.0)


CONFIGS = {
    "llama-traditional": dict(model_type="llama", rope_traditional=True),
    "llama": dict(model_type="llama"),
    "qwen2": dict(model_type="qwen2"),
    "qwen3": dict(model_type="qwen3", head_dim=32),
    "llama-q8-g64": dict(model_type="llama", bits=8, group_size=64),
}


def tiny(model_type, bits=4, group_size=32, seed=0, **overrides):
    from mlx_lm.models import llama, qwen2, qwen3

    module = {"llama": llama, "qwen2": qwen2, "qwen3": qwen3}[model_type]
    config = dict(
        model_type=model_type, hidden_size=128, num_hidden_layers=2, intermediate_size=256,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5, vocab_size=512,
        max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=10000.0, **overrides,
    )
    mx.random.seed(seed)
    model = module.Model(module.ModelArgs.from_dict(config))
    # Non-trivial norms and biases, so a wrong weight slot shows in the logits.
    model.update(
        nn.utils.tree_map(lambda p: p + 0.1 * mx.random.normal(p.shape), model.parameters())
    )
    nn.quantize(model, group_size=group_size, bits=bits)
    mx.eval(model.parameters())
    return model


def pair(name):
    cfg = dict(CONFIGS[name])
    stock, fast = tiny(**cfg), tiny(**cfg)
    assert native.prepare(fast).startswith("cpu-native")
    assert all(isinstance(b, native.NativeBlock) for b in fast.model.layers)
    return stock, fast


def tokens(n, seed=0):
    return mx.array(np.random.default_rng(seed).integers(0, 512, n))[None]


def run(model, cache, toks):
    return model(toks, cache=cache)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_layer_matches_stock_in_prefill_and_decode(name):
    from mlx_lm.models.cache import make_prompt_cache

    stock, fast = pair(name)
    cs, cf = make_prompt_cache(stock), make_prompt_cache(fast)
    prompt = tokens(9)
    for step in range(4):
        a, b = run(stock, cs, prompt), run(fast, cf, prompt)
        err = np.array(b) - np.array(a)
        scale = np.abs(np.array(a)).max()
        assert np.abs(err).max() < 2e-3 * scale, (step, np.abs(err).max(), err.mean(), err.std())
        assert cs[0].offset == cf[0].offset
        prompt = mx.argmax(a[:, -1:], axis=-1)


def test_chunks_equal_one_pass_and_trim_refeeds_the_same():
    from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache

    _, fast = pair("llama")
    toks = tokens(14, seed=3)
    whole = make_prompt_cache(fast)
    ref = fast(toks, cache=whole)
    chunked = make_prompt_cache(fast)
    for a, b in ((0, 6), (6, 10), (10, 14)):  # 4-token chunks: the shape of speculative verification
        last = fast(toks[:, a:b], cache=chunked)
    assert close(last[:, -1], ref[:, -1], 1e-4)
    assert chunked[0].offset == whole[0].offset == 14
    trim_prompt_cache(chunked, 5)
    assert chunked[0].offset == 9
    again = fast(toks[:, 9:], cache=chunked)
    assert close(again[:, -1], ref[:, -1], 1e-4)
    keys, values = chunked[1].keys_and_values()
    assert keys.shape == (1, 2, 14, 32) and close(keys, whole[1].keys_and_values()[0], 1e-4)


def test_saved_cache_resumes(tmp_path):
    from mlx_lm.models.cache import load_prompt_cache, make_prompt_cache, save_prompt_cache

    _, fast = pair("qwen3")
    toks = tokens(12, seed=4)
    cache = make_prompt_cache(fast)
    fast(toks[:, :8], cache=cache)
    ref = fast(toks[:, 8:], cache=cache)
    cache = make_prompt_cache(fast)
    fast(toks[:, :8], cache=cache)
    save_prompt_cache(str(tmp_path / "chat.safetensors"), cache)
    loaded = load_prompt_cache(str(tmp_path / "chat.safetensors"))
    assert loaded[0].offset == 8
    assert close(fast(toks[:, 8:], cache=loaded)[:, -1], ref[:, -1], 1e-4)


def test_decode_writes_the_cache_in_place_until_it_grows():
    from mlx_lm.models.cache import make_prompt_cache

    _, fast = pair("llama")
    cache = make_prompt_cache(fast)
    y = mx.argmax(fast(tokens(250), cache=cache)[:, -1:], axis=-1)
    mx.eval(y)
    before = squish_native.cache_copies()
    for _ in range(4):  # pipelined like the engine: the next step is built before this one is read
        nxt = mx.argmax(fast(y, cache=cache)[:, -1:], axis=-1)
        mx.async_eval(nxt)
        y = nxt
    mx.eval(y)
    assert squish_native.cache_copies() == before  # offsets 250..253 fit the 256 slots
    for _ in range(4):
        y = mx.argmax(fast(y, cache=cache)[:, -1:], axis=-1)
    mx.eval(y)
    assert squish_native.cache_copies() == before + 2 * 1  # one growth to 512, both layers
    assert cache[0].keys.shape[2] == 512 and cache[0].offset == 258


def test_non_finite_activations_reach_the_logits():
    from mlx_lm.models.cache import make_prompt_cache

    _, fast = pair("llama")
    x = mx.full((1, 2, 128), np.nan)
    out = fast.model.layers[0](x, None, cache=make_prompt_cache(fast)[0])
    assert not np.isfinite(np.array(out)).any()


def test_an_uncovered_block_keeps_the_native_matmul_and_norms():
    stock, fast = tiny("llama", mlp_bias=True), tiny("llama", mlp_bias=True)
    assert native.prepare(fast).startswith("cpu-native")
    assert not any(isinstance(b, native.NativeBlock) for b in fast.model.layers)
    assert isinstance(fast.model.layers[0].self_attn.q_proj, native.NativeQuantizedLinear)
    assert isinstance(fast.model.layers[0].input_layernorm, native.NativeRMSNorm)
    toks = tokens(6, seed=5)
    ref = np.array(stock(toks))
    assert np.abs(np.array(fast(toks)) - ref).max() < 2e-3 * np.abs(ref).max()


def test_layer_contracts():
    _, fast = pair("llama")
    block = fast.model.layers[0]
    with pytest.raises(ValueError, match="batch 1"):
        block(mx.zeros((2, 1, 128)), None, cache=None)
    with pytest.raises(ValueError, match="needs mlx-lm's KVCache, not RotatingKVCache"):
        block(mx.zeros((1, 1, 128)), None, cache=RotatingKVCache(max_size=8))
    with pytest.raises(ValueError, match="weight arrays"):
        squish_native.decoder_layer(mx.zeros((1, 1, 128)), block.weights[:-1], mx.zeros((1, 2, 0, 32)),
                                    mx.zeros((1, 2, 0, 32)), 0, block._spec)
    with pytest.raises(ValueError, match="caches must be float32"):
        squish_native.decoder_layer(mx.zeros((1, 1, 128)), block.weights, mx.zeros((1, 3, 0, 32)),
                                    mx.zeros((1, 3, 0, 32)), 0, block._spec)


PROFILE_RUN = """
import json
import mlx.core as mx
import squish_native
from squish.engine import native
from test_fused import tiny

model = tiny("llama")
native.prepare(model)
mx.eval(model(mx.array([[1, 2, 3, 4]])))
first = squish_native.profile(reset=True)
print(json.dumps([first, squish_native.profile()]))
"""


@pytest.mark.parametrize("enabled", [True, False])
def test_profile_times_every_phase_only_when_enabled(enabled):
    env = {k: v for k, v in os.environ.items() if k != "SQUISH_NATIVE_PROFILE"}
    if enabled:
        env["SQUISH_NATIVE_PROFILE"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", PROFILE_RUN], cwd=Path(__file__).parent, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    first, after_reset = json.loads(proc.stdout)
    layers = 2  # tiny(): two decoder layers, each one node, then the tied head as a native matmul
    calls = {"norm": 2 * layers, "qkv": layers, "rope": layers, "attention": layers, "o": layers,
             "gate_up": layers, "swiglu": layers, "down": layers, "matmul": 1}
    assert set(first) == set(calls)
    for phase, (wall, cpu, n) in first.items():
        if enabled:
            assert n == calls[phase] and wall > 0 and cpu > 0, phase
        else:
            assert (wall, cpu, n) == (0, 0, 0), phase
    assert all(v == [0, 0, 0] for v in after_reset.values())
