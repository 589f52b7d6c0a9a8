"""Every Numba kernel against the plain NumPy reference beside it, in float32 and float64.

A reference takes the same arguments as its kernel and works in place as the kernel does; the
tests run it on float64 copies, so its own rounding never loosens the comparison."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from numpygpt import kernels

SETTINGS = settings(max_examples=15, deadline=None)
dtypes = st.sampled_from([np.float32, np.float64])
rows = st.integers(1, 37)
cols = st.integers(1, 70)


@pytest.fixture(autouse=True, scope="module", params=["all threads", "one thread"])
def threads(request):
    """Every test here runs twice: with each kernel split over all threads (as the larger
    presets run them), and on the calling thread alone (as small inputs run)."""
    saved = kernels.PARALLEL_MIN_SIZE
    kernels.PARALLEL_MIN_SIZE = 0 if request.param == "all threads" else 1 << 62
    yield request.param
    kernels.PARALLEL_MIN_SIZE = saved


def test_small_inputs_take_the_one_thread_copy(threads):
    """The wrapper picks the copy by size, and both copies compute the same thing."""
    out, bias = np.zeros((3, 4), np.float32), np.arange(4, dtype=np.float32)
    kernels.add_bias(out, bias)
    assert np.array_equal(out, np.tile(bias, (3, 1)))
    compiled = kernels.add_bias.one_thread if threads == "one thread" else kernels.add_bias.parallel
    assert compiled.signatures  # the copy this mode chose has been compiled and run


def tol(dtype):
    """float32 kernels are held to float32 rounding of the float64 reference's answer."""
    return dict(rtol=2e-5, atol=2e-6) if dtype == np.float32 else dict(rtol=1e-11, atol=1e-12)


def f64(*arrays):
    """The references run in float64, so their own rounding never loosens the comparison."""
    return [a.astype(np.float64) for a in arrays]


def normal(rng, shape, dtype, scale=1.0):
    return (rng.normal(size=shape) * scale).astype(dtype)


@SETTINGS
@given(n=rows, c=cols, dtype=dtypes)
def test_layernorm_forward_and_backward(n, c, dtype):
    rng = np.random.default_rng(n * 100 + c)
    x, w, b, dout = (normal(rng, s, dtype) for s in [(n, c), (c,), (c,), (n, c)])
    out, mean, rstd = np.empty_like(x), np.empty(n, dtype), np.empty(n, dtype)
    kernels.layernorm_forward(x, w, b, 1e-5, out, mean, rstd)
    ref = f64(x, w, b, out, mean, rstd)
    kernels.layernorm_forward_reference(*ref[:3], 1e-5, *ref[3:])
    for got, want in zip((out, mean, rstd), ref[3:]):
        np.testing.assert_allclose(got, want, **tol(dtype))
    dx = np.zeros_like(x)  # written whole by both; zeros so its copy for the reference casts no NaN
    dw, db = np.ones(c, dtype), np.ones(c, dtype)  # accumulates onto what is there
    ref = f64(dout, x, mean, rstd, w, dx, dw, db)
    kernels.layernorm_backward(dout, x, mean, rstd, w, dx, dw, db)
    kernels.layernorm_backward_reference(*ref)
    for got, want in zip((dx, dw, db), ref[5:]):
        np.testing.assert_allclose(got, want, **tol(dtype))


@SETTINGS
@given(n=st.integers(1, 500), dtype=dtypes)
def test_gelu_forward_and_backward(n, dtype):
    rng = np.random.default_rng(n)
    x, dout = normal(rng, n, dtype, 3.0), normal(rng, n, dtype)
    out, sig, dx = np.empty_like(x), np.empty_like(x), np.empty_like(x)
    kernels.gelu_forward(x, out, sig)
    kernels.gelu_backward(dout, x, sig, dx)
    ref = f64(x, out, sig, dout, dx)
    kernels.gelu_forward_reference(*ref[:3])
    kernels.gelu_backward_reference(ref[3], ref[0], ref[2], ref[4])
    for got, want in zip((out, sig, dx), ref[1:3] + ref[4:]):
        np.testing.assert_allclose(got, want, **tol(dtype))


@SETTINGS
@given(n=rows, c=cols, dtype=dtypes)
def test_bias_add(n, c, dtype):
    rng = np.random.default_rng(n * 100 + c)
    out, bias = normal(rng, (n, c), dtype), normal(rng, c, dtype)
    want, want_bias = f64(out, bias)
    kernels.add_bias_reference(want, want_bias)
    kernels.add_bias(out, bias)
    np.testing.assert_allclose(out, want, **tol(dtype))


def past_reach(t, tile):
    """(T, T) bool: where a causal kernel on tiles of `tile` rows must neither read nor write."""
    return ~kernels.causal_reach(t, tile)


@SETTINGS
@given(bh=st.integers(1, 6), t=st.integers(1, 19), tile=st.integers(1, 21), dtype=dtypes)
def test_causal_softmax_forward_and_backward(bh, t, tile, dtype):
    """Within each row's reach the kernels equal the references (the whole square when
    tile >= T); past it, NaN goes in and the same NaN comes out: nothing there is read or written."""
    rng = np.random.default_rng(bh * 50 + t)
    scores, dprobs = normal(rng, (bh, t, t), dtype, 3.0), normal(rng, (bh, t, t), dtype)
    outside = past_reach(t, tile)
    scores[:, outside] = np.nan
    dprobs[:, outside] = np.nan
    scale = 0.37
    ref, ref_d = f64(scores, dprobs)
    kernels.causal_softmax_forward_reference(ref, scale, tile)
    probs = scores.copy()
    kernels.causal_softmax_forward(probs, scale, tile)
    np.testing.assert_allclose(probs, ref, **tol(dtype))  # NaN where both are NaN
    assert np.all(np.isnan(probs[:, outside]))
    assert np.all(np.triu(np.where(outside, 0, probs[0]), k=1) == 0)
    kernels.causal_softmax_backward_reference(ref_d, ref, scale, tile)
    kernels.causal_softmax_backward(dprobs, probs, scale, tile)
    np.testing.assert_allclose(dprobs, ref_d, **tol(dtype))
    assert np.all(np.isnan(dprobs[:, outside]))
    if tile >= t:  # the whole square: the plain masked softmax of every row
        want = kernels.masked_softmax(scores.astype(np.float64) * scale, np.tri(t, dtype=bool))
        np.testing.assert_allclose(probs, want, **tol(dtype))


@SETTINGS
@given(bh=st.integers(1, 6), t=st.integers(1, 19), tile=st.integers(1, 21), p=st.sampled_from([0.1, 0.5]),
       seed=st.integers(0, 2 ** 63 - 1), dtype=dtypes)
def test_causal_attention_dropout_forward_and_backward(bh, t, tile, p, seed, dtype):
    """Dropout on the causal triangle alone keeps exactly what the reference mask over the whole
    (BH, T, T) square keeps (the same element numbering, offset included), and the fused
    backward equals the reference dropout backward followed by the softmax backward."""
    rng = np.random.default_rng(bh * 50 + t)
    outside = past_reach(t, tile)
    probs = normal(rng, (bh, t, t), dtype, 3.0)
    kernels.causal_softmax_forward(probs, 0.5, t)
    probs[:, outside] = np.nan
    datt = normal(rng, (bh, t, t), dtype)
    datt[:, outside] = np.nan
    threshold, drop_scale, offset = kernels.dropout_threshold(p), 1.0 / (1.0 - p), probs.size * (seed % 3)
    keep = kernels.dropout_keep_reference(seed, probs.size, threshold, offset).reshape(probs.shape)

    att = np.full_like(probs, np.nan)  # every element within the reach must be written
    kernels.causal_dropout(probs, att, seed, threshold, drop_scale, offset, tile)
    want = np.where(outside, np.nan, np.where(keep, probs.astype(np.float64) * drop_scale, 0.0))
    np.testing.assert_allclose(att, want, **tol(dtype))
    assert np.all(np.triu(np.where(outside, 0, att[0]), k=1) == 0)

    ref_att = np.full(probs.shape, np.nan)
    kernels.causal_dropout_reference(*f64(probs), ref_att, seed, threshold, drop_scale, offset, tile)
    np.testing.assert_allclose(att, ref_att, **tol(dtype))

    scale = 0.37
    ref = np.where(keep, datt.astype(np.float64) * drop_scale, 0.0)
    kernels.causal_softmax_backward_reference(ref, *f64(probs), scale, tile)
    ref[:, outside] = np.nan
    fused_ref = datt.astype(np.float64)
    kernels.causal_dropout_softmax_backward_reference(fused_ref, *f64(probs), scale, seed, threshold, drop_scale,
                                                      offset, tile)
    kernels.causal_dropout_softmax_backward(datt, probs, scale, seed, threshold, drop_scale, offset, tile)
    np.testing.assert_allclose(datt, ref, **tol(dtype))
    np.testing.assert_allclose(fused_ref, ref, rtol=1e-12, atol=1e-12)
    assert np.all(np.triu(np.where(outside, 0, datt[0]), k=1) == 0)


@SETTINGS
@given(n=rows, v=st.integers(1, 300), dtype=dtypes, data=st.data())
def test_cross_entropy_forward_and_backward(n, v, dtype, data):
    rng = np.random.default_rng(n * 1000 + v)
    logits = normal(rng, (n, v), dtype, 4.0)
    targets = rng.integers(0, v, size=n)
    targets[rng.random(n) < data.draw(st.sampled_from([0.0, 0.3, 1.0]))] = -1
    ref_probs, ref_losses = logits.astype(np.float64), np.empty(n)
    kernels.cross_entropy_forward_reference(ref_probs, targets, -1, ref_losses)
    row_losses = np.empty(n)
    probs = logits.copy()
    kernels.cross_entropy_forward(probs, targets, -1, row_losses)
    np.testing.assert_allclose(row_losses, ref_losses, **tol(dtype))
    np.testing.assert_allclose(probs, ref_probs, **tol(dtype))
    # By hand, on the kept rows: -log of the target's probability.
    kept = np.flatnonzero(targets != -1)
    np.testing.assert_allclose(ref_losses[kept], -np.log(ref_probs[kept, targets[kept]]), rtol=1e-9)
    n_kept = max(len(kept), 1)
    kernels.cross_entropy_backward_reference(ref_probs, targets, -1, 0.7 / n_kept)
    kernels.cross_entropy_backward(probs, targets, -1, 0.7 / n_kept)
    np.testing.assert_allclose(probs, ref_probs, **tol(dtype))


def test_cross_entropy_is_exact_where_probability_underflows():
    """A target 200 nats below the max has p = 0 in float32, yet its loss is still 200."""
    logits = np.array([[0.0, -200.0]], dtype=np.float32)
    row_losses = np.empty(1)
    kernels.cross_entropy_forward(logits, np.array([1]), -1, row_losses)
    assert abs(row_losses[0] - 200.0) < 1e-4


@SETTINGS
@given(n=rows, v=st.integers(1, 9), c=cols, dtype=dtypes)
def test_embedding_backward(n, v, c, dtype):
    rng = np.random.default_rng(n + v + c)
    ids = rng.integers(0, v, size=n)
    dout = normal(rng, (n, c), dtype)
    got, want = np.ones((v, c), dtype), np.ones((v, c), dtype)
    kernels.embedding_backward(got, ids, dout)
    kernels.embedding_backward_reference(want, ids, dout)
    np.testing.assert_allclose(got, want, **tol(dtype))


@SETTINGS
@given(p=st.integers(1, 1000), step=st.integers(1, 50), dtype=dtypes)
def test_adamw(p, step, dtype):
    rng = np.random.default_rng(p + step)
    param, grad = normal(rng, p, dtype), normal(rng, p, dtype)
    m, v = normal(rng, p, dtype) * 0.1, np.abs(normal(rng, p, dtype)) * 0.01
    args = (0.1 if step % 2 else 0.0, 1e-3, 0.9, 0.95, 1e-8, step)  # with and without decay
    want = [a.copy() for a in (param, grad, m, v)]
    kernels.adamw_reference(want[0], want[1], want[2], want[3], *args)
    kernels.adamw(param, grad, m, v, *args)
    for got, expected in zip((param, m, v), (want[0], want[2], want[3])):
        np.testing.assert_allclose(got, expected, **tol(dtype))


@SETTINGS
@given(p=st.integers(1, 5000), dtype=dtypes)
def test_sum_of_squares(p, dtype):
    x = normal(np.random.default_rng(p), p, dtype)
    np.testing.assert_allclose(kernels.sum_of_squares(x), kernels.sum_of_squares_reference(x), rtol=1e-10)


@SETTINGS
@given(n=st.integers(1, 20_000), p=st.sampled_from([0.1, 0.25, 0.5]), seed=st.integers(0, 2 ** 63 - 1),
       dtype=dtypes)
def test_dropout_mask_equals_its_reference(n, p, seed, dtype):
    """The parallel kernel keeps exactly the elements the NumPy reference keeps, scaled."""
    x = normal(np.random.default_rng(n), n, dtype)
    out = np.empty_like(x)
    threshold = kernels.dropout_threshold(p)
    offset = n * (seed % 3)
    kernels.dropout_apply(x, out, seed, threshold, 1.0 / (1.0 - p), offset)
    keep = kernels.dropout_keep_reference(seed, n, threshold, offset)
    np.testing.assert_allclose(out, np.where(keep, x.astype(np.float64) / (1.0 - p), 0.0), **tol(dtype))
    ref = np.empty(n)
    kernels.dropout_apply_reference(x.astype(np.float64), ref, seed, threshold, 1.0 / (1.0 - p), offset)
    np.testing.assert_allclose(out, ref, **tol(dtype))
    assert np.array_equal(out != 0, keep & (x != 0))


def test_dropout_masks_keep_1_minus_p_independently_per_seed():
    """Over a million elements the kept fraction is 1 - p within 5 standard deviations, two
    seeds agree only as often as independent masks would, and neighbours are uncorrelated."""
    n, p = 1 << 20, 0.1
    threshold = kernels.dropout_threshold(p)
    a = kernels.dropout_keep_reference(1, n, threshold)
    b = kernels.dropout_keep_reference(2, n, threshold)
    sd = np.sqrt(p * (1 - p) / n)
    assert abs(a.mean() - (1 - p)) < 5 * sd and abs(b.mean() - (1 - p)) < 5 * sd
    assert abs((a & b).mean() - (1 - p) ** 2) < 5 * sd
    assert abs((a[1:] & a[:-1]).mean() - (1 - p) ** 2) < 5 * sd
    # In place (out is x) gives the same as out of place.
    x = np.ones(n, np.float32)
    kernels.dropout_apply(x, x, 1, threshold, 1.0 / (1 - p), 0)
    assert np.array_equal(x != 0, a)


def test_every_kernel_has_a_reference_of_the_same_arguments():
    """What NUMPYGPT_KERNELS=numpy swaps in must be callable exactly as the kernel is."""
    import inspect
    for name in kernels.KERNELS:
        kernel, reference = getattr(kernels, name), getattr(kernels, name + "_reference")
        assert inspect.signature(kernel).parameters.keys() == inspect.signature(reference).parameters.keys(), name


@SETTINGS
@given(n=st.integers(1, 5), c_in=st.integers(1, 70), c_out=st.integers(1, 90))
def test_int8_matmul(n, c_in, c_out):
    """int8 weights times float32 activations, summed in float32: the reference dequantizes
    and multiplies in float64."""
    rng = np.random.default_rng(n * 10_000 + c_in * 100 + c_out)
    w = rng.integers(-127, 128, (c_out, c_in), dtype=np.int8)
    scale = (rng.random(c_out) * 0.05).astype(np.float32)
    x = normal(rng, (n, c_in), np.float32)
    out, want = np.empty((n, c_out), np.float32), np.empty((n, c_out))
    kernels.int8_matmul(w, scale, x, out)
    kernels.int8_matmul_reference(w, scale.astype(np.float64), x.astype(np.float64), want)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(initial=1.0))


@njit(cache=False)
def _fast_exp_of(x, out):
    for i in range(x.size):
        out[i] = kernels.fast_exp(x[i])


def test_fast_exp_is_exp_to_one_float32_rounding():
    """Over 4M float32 points spanning exp's whole normal range, fast_exp is within 1e-7 of the
    exact value relatively (the float32 spacing is 6e-8 to 1.2e-7); outside it is clamped to
    finite values; in float64 it is math.exp."""
    x = np.linspace(kernels.EXP_LOW, kernels.EXP_HIGH, 4_000_001, dtype=np.float32)
    out = np.empty_like(x)
    _fast_exp_of(x, out)
    assert np.max(np.abs(out / np.exp(x.astype(np.float64)) - 1.0)) < 1e-7
    extremes = np.array([-1e30, -200.0, -88.0, 89.0, 1e30, -np.float32(3.4e38)], dtype=np.float32)
    out = np.empty_like(extremes)
    _fast_exp_of(extremes, out)
    assert np.all(np.isfinite(out)) and np.all(out > 0)
    assert out[0] < 1.2e-38 and out[3] > 1e38
    x64 = np.linspace(-700.0, 700.0, 1001)
    out64 = np.empty_like(x64)
    _fast_exp_of(x64, out64)
    np.testing.assert_allclose(out64, np.exp(x64), rtol=1e-15)  # libm's exp and NumPy's may differ in the last bit
