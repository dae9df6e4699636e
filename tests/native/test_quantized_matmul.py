"""squish_native.quantized_matmul against mx.quantized_matmul on every kernel path this CPU has.

Seeded random weights of the embedded model's real shapes; errors are reported as max abs,
mean and std. Two references: stock MLX on float32 x (the truth the kernel approximates) and
the same math on x rounded exactly as the kernel rounds it (int8 blocks of 32, two passes),
which the kernel must match to float rounding.
"""

import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

squish_native = pytest.importorskip("squish_native")

needs_native = pytest.mark.skipif(not squish_native.AVAILABLE, reason=f"no native module: {squish_native.reason}")

ISAS = squish_native.supported_isas() if squish_native.AVAILABLE else []
# (N, K) of the embedded model: q/o, k/v, gate/up, down, and a slice of the tied output head.
SHAPES = [(576, 576), (192, 576), (1536, 576), (576, 1536), (4096, 576)]


def test_the_native_module_is_built_on_linux():
    # CI builds it from source with the machine's compiler: a skip here would hide a broken build.
    assert sys.platform != "linux" or squish_native.AVAILABLE, squish_native.reason
    assert "scalar" in ISAS


@pytest.fixture
def isa():
    yield
    squish_native.set_isa("auto")


def quantized(n, k, bits, group_size, seed, dtype=mx.float16):
    mx.random.seed(seed)
    w = mx.random.normal((n, k)) * 0.05
    wq, scales, biases = mx.quantize(w, group_size=group_size, bits=bits)
    return wq, scales.astype(dtype), biases.astype(dtype)


def activations(m, k, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    x[:, rng.random(k) > 0.98] *= 30  # a few outlier channels, like real residual streams
    return x


def int8_blocks(x):
    """x rounded like the kernel: hi = int8 per block of 32 (step d = max|x| / 127), then what
    that left over as int8 in steps of d / 256 (lo), so x ~= d * hi + d / 256 * lo."""
    blocks = x.reshape(x.shape[0], -1, 32)
    amax = np.abs(blocks).max(-1, keepdims=True)
    d = (amax / np.float32(127)).astype(np.float32)
    inv = np.where(amax > 0, np.float32(127) / np.where(amax > 0, amax, 1), 0).astype(np.float32)
    hi = np.clip(np.round(blocks * inv), -127, 127).astype(np.float32)
    lo = np.clip(np.round((blocks - d * hi) * (inv * np.float32(256))), -127, 127).astype(np.float32)
    return (d * hi + d / np.float32(256) * lo).reshape(x.shape)


def kernel_math(x, wq, scales, biases, group_size, bits):
    """What the kernel computes: scales times the rounded x, biases times the exact group sums."""
    scaled = stock(int8_blocks(x), wq, scales, mx.zeros_like(biases), group_size, bits)
    group_sums = x.reshape(x.shape[0], -1, group_size).sum(-1)
    return scaled + group_sums @ np.array(biases.astype(mx.float32)).T


def stock(x, wq, scales, biases, group_size, bits):
    return np.array(
        mx.quantized_matmul(
            mx.array(x), wq, scales.astype(mx.float32), biases.astype(mx.float32),
            transpose=True, group_size=group_size, bits=bits,
        )
    )


def error_stats(out, ref):
    err = out - ref
    return np.abs(err).max(), err.mean(), err.std(), np.abs(ref).max()


CASES = [
    pytest.param(bits, group_size, shape, id=f"q{bits}-g{group_size}-{shape[0]}x{shape[1]}")
    for bits in (4, 8)
    for group_size in (32, 64, 128)
    for shape in SHAPES
    if shape[1] % group_size == 0
]


@pytest.mark.parametrize("bits,group_size,shape", CASES)
@needs_native
def test_matches_stock_on_every_path(isa, bits, group_size, shape):
    n, k = shape
    wq, scales, biases = quantized(n, k, bits, group_size, seed=n + k + bits)
    for m in (1, 5, 37):  # decode, a register tile and its remainder, prefill's weight-row blocks
        x = activations(m, k, seed=m)
        ref = stock(x, wq, scales, biases, group_size, bits)
        exact = kernel_math(x, wq, scales, biases, group_size, bits)
        outs = {}
        for name in ISAS:
            squish_native.set_isa(name)
            y = squish_native.quantized_matmul(mx.array(x), wq, scales, biases, group_size, bits)
            assert y.dtype == mx.float32 and y.shape == (m, n)
            outs[name] = np.array(y)
            max_err, mean, std, scale = error_stats(outs[name], ref)
            # Against float32 x: two int8 passes leave about 1e-4 of the output's range.
            assert max_err < 2e-3 * scale, (name, m, max_err, mean, std, scale)
            assert abs(mean) < 1e-4 * scale and std < 3e-4 * scale, (name, m, mean, std)
            # Against the same rounding of x: only float summation order differs.
            assert np.abs(outs[name] - exact).max() < 2e-5 * scale + 1e-5, (name, m)
        for name in ISAS:
            assert np.abs(outs[name] - outs["scalar"]).max() < 2e-5 * np.abs(ref).max() + 1e-5, name


@pytest.mark.parametrize("stype", [mx.float32, mx.float16, mx.bfloat16], ids=str)
@needs_native
def test_scale_dtypes(isa, stype):
    wq, scales, biases = quantized(192, 576, 4, 32, seed=7, dtype=stype)
    x = activations(3, 576, seed=3)
    ref = stock(x, wq, scales, biases, 32, 4)
    for name in ISAS:
        squish_native.set_isa(name)
        out = np.array(squish_native.quantized_matmul(mx.array(x), wq, scales, biases, 32, 4))
        assert np.abs(out - ref).max() < 2e-3 * np.abs(ref).max(), name


@pytest.mark.parametrize("bits", [4, 8])
@needs_native
def test_one_pass_is_coarser_but_close(isa, bits):
    wq, scales, biases = quantized(576, 576, bits, 32, seed=1)
    x = activations(2, 576, seed=2)
    ref = stock(x, wq, scales, biases, 32, bits)
    scale = np.abs(ref).max()
    for name in ISAS:
        squish_native.set_isa(name)
        fast = np.array(squish_native.quantized_matmul(mx.array(x), wq, scales, biases, 32, bits, precise=False))
        precise = np.array(squish_native.quantized_matmul(mx.array(x), wq, scales, biases, 32, bits))
        assert np.abs(precise - ref).max() < np.abs(fast - ref).max() / 20, name
        assert np.abs(fast - ref).max() < 0.1 * scale, name


@needs_native
def test_many_rows_batched_shapes_bias_and_residual():
    wq, scales, biases = quantized(192, 576, 4, 64, seed=5)
    x = activations(2 * 37, 576, seed=9).reshape(2, 37, 576)
    bias = mx.array(np.linspace(-1, 1, 192, dtype=np.float32))
    residual = mx.array(activations(2 * 37, 192, seed=4).reshape(2, 37, 192))
    y = squish_native.quantized_matmul(mx.array(x), wq, scales, biases, 64, 4, bias=bias, residual=residual)
    assert y.shape == (2, 37, 192) and y.dtype == mx.float32
    ref = stock(x.reshape(-1, 576), wq, scales, biases, 64, 4).reshape(2, 37, 192) + np.array(bias) + np.array(residual)
    assert np.abs(np.array(y) - ref).max() < 2e-3 * np.abs(ref).max()


@pytest.mark.parametrize("name", ISAS)
@pytest.mark.parametrize("bits", [4, 8])
@needs_native
def test_a_row_is_the_same_in_a_pass_of_many_as_alone(isa, name, bits):
    # Speculative decoding checks drafts in one pass of up to 17 rows and keeps the tokens a
    # one-row step would have produced: each row's sums must not depend on the tile it lands in
    # (1-4 rows of x against 1-4 weight rows) or on how the outputs are reduced.
    squish_native.set_isa(name)
    wq, scales, biases = quantized(70, 576, bits, 32, seed=12)  # 70: every weight-row tail too
    x = activations(17, 576, seed=13)
    alone = [np.array(squish_native.quantized_matmul(mx.array(x[i : i + 1]), wq, scales, biases, 32, bits)) for i in range(17)]
    for m in range(2, 18):
        together = np.array(squish_native.quantized_matmul(mx.array(x[:m]), wq, scales, biases, 32, bits))
        for i in range(m):
            assert np.array_equal(together[i : i + 1], alone[i]), (name, bits, m, i)


@needs_native
def test_strided_input_is_read_correctly():
    wq, scales, biases = quantized(64, 576, 4, 32, seed=6)
    x = mx.array(activations(576, 6, seed=1)).T  # a (6, 576) view whose last axis has stride 6
    y = np.array(squish_native.quantized_matmul(x, wq, scales, biases, 32, 4))
    ref = stock(np.array(x), wq, scales, biases, 32, 4)
    assert np.abs(y - ref).max() < 2e-3 * np.abs(ref).max()


@needs_native
def test_non_finite_inputs_give_non_finite_outputs():
    wq, scales, biases = quantized(64, 576, 4, 32, seed=2)
    x = activations(2, 576, seed=5)
    x[0, 7] = np.nan
    x[1, 100] = np.inf
    y = np.array(squish_native.quantized_matmul(mx.array(x), wq, scales, biases, 32, 4))
    assert not np.isfinite(y[0]).any() and not np.isfinite(y[1]).any()


@pytest.mark.parametrize(
    "change,message",
    [
        (dict(bits=3), "bits must be 4 or 8"),
        (dict(group_size=16), "group_size must be"),
        (dict(x=mx.zeros((2, 576), dtype=mx.float16)), "x must be float32"),
        (dict(x=mx.zeros((2, 512))), "must be uint32 of shape"),
        (dict(x=mx.zeros((2, 100))), "multiple of group_size"),
        (dict(scales=mx.zeros((64, 9), dtype=mx.float16)), "scales and biases must have shape"),
        (dict(scales=mx.zeros((64, 18), dtype=mx.float32)), "share one dtype"),
        (dict(bias=mx.zeros((63,))), "bias must be float32"),
        (dict(residual=mx.zeros((2, 65))), "residual must be float32"),
    ],
)
@needs_native
def test_contract_errors(change, message):
    wq, scales, biases = quantized(64, 576, 4, 32, seed=3)
    args = dict(x=mx.zeros((2, 576)), w=wq, scales=scales, biases=biases, group_size=32, bits=4)
    args.update(change)
    kwargs = {k: args.pop(k) for k in ("bias", "residual") if k in args}
    with pytest.raises(ValueError, match=message):
        squish_native.quantized_matmul(*args.values(), **kwargs)


@needs_native
def test_unknown_path_is_refused():
    with pytest.raises(ValueError, match="not available"):
        squish_native.set_isa("avx1024")


@needs_native
def test_thread_counts_agree():
    wq, scales, biases = quantized(1536, 576, 4, 32, seed=8)
    x = mx.array(activations(9, 576, seed=8))
    outs = []
    try:
        for threads in (1, 2, 3):
            squish_native.set_threads(threads)
            assert squish_native.threads() == threads
            for _ in range(20):  # many small parallel regions in a row: no hang, same answer
                y = squish_native.quantized_matmul(x, wq, scales, biases, 32, 4)
            outs.append(np.array(y))
    finally:
        squish_native.set_threads(0)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.parametrize("name", ISAS)
@needs_native
def test_env_var_forces_a_path(name):
    code = "import squish_native; print(squish_native.isa())"
    env = {"SQUISH_NATIVE_ISA": name, "PATH": ""}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == name
