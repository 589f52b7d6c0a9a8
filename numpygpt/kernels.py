"""The hot loops that are not matmuls, as Numba kernels, each beside the plain NumPy it must equal.

Every kernel here has a `*_reference` twin written in plain NumPy, with the same arguments and
the same effect (in place, as the kernel works): short, obviously right, and what the tests
compare the kernel against (float32 and float64). The layers call the kernels; a reader learns
from the references, and with NUMPYGPT_KERNELS=numpy in the environment the layers call the
references instead (see the end of this file), so the whole model runs on plain NumPy.

The kernels are memory-bound, so their whole point is to touch each element as few times as
possible: one pass where NumPy would make three temporaries. Rows are independent, so they
split across cores with `prange`. Nothing here imports the rest of the project.

`fastmath=True` lets LLVM reorder sums and vectorise exp; that changes results only by float
rounding here because no kernel produces or consumes inf or NaN: maxima start from the first
element rather than -inf, and exp arguments are clamped where they could overflow.

Shapes: N rows of C features (a (B, T, C) activation is viewed as (B*T, C)); attention scores
are (BH, T, T) with BH = batch * heads.
"""
import functools
import math
import os
import threading
import types

import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba import types as numba_types
from numba.extending import intrinsic, overload

# Below this many elements (in a kernel's first argument) a parallel kernel runs on the calling
# thread alone: waking the other threads costs ~40 us, more than they save on small arrays
# (the tiny preset's bias add: 44 us on two threads, 6 us on one; its step: 7.0-7.6 ms with
# a threshold of 2^16, 6.5 ms with 2^18 or 2^20). The larger presets' arrays are all bigger.
PARALLEL_MIN_SIZE = 1 << 18


# Threads that run a share of the work themselves (numpygpt.training.threads: one shard of the
# batch per core) call every kernel's one-thread copy: they already fill the cores.
_calling_thread = threading.local()


def run_on_calling_thread_only():
    """From now on, kernels called from this thread run on it alone, whatever their size."""
    _calling_thread.alone = True


def parallel_kernel(fn):
    """`fn` compiled twice: split over all threads with prange (@njit(parallel=True)), and as a
    one-thread copy (where prange is plain range) that runs when the first argument is small
    or the calling thread is one of several sharing the work. Both release the GIL (nogil), so
    such threads run their kernels at the same time."""
    # error_model="numpy": a division by zero gives inf/NaN as NumPy does (the loss check
    # then stops training with one clear line) rather than raising inside the kernel.
    parallel = njit(parallel=True, nogil=True, cache=True, fastmath=True, error_model="numpy")(fn)
    one_thread = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, fn.__closure__)
    one_thread.__qualname__ = f"{fn.__qualname__}_one_thread"  # its own entry in Numba's cache
    one_thread = njit(nogil=True, cache=True, fastmath=True, error_model="numpy")(one_thread)

    @functools.wraps(fn)
    def run(*args):
        alone = args[0].size < PARALLEL_MIN_SIZE or getattr(_calling_thread, "alone", False)
        return (run.one_thread if alone else run.parallel)(*args)
    # Profilers (cProfile, py-spy) name a frame by its code object: the kernel's, not "run".
    run.__code__ = run.__code__.replace(co_name=fn.__name__)
    run.parallel, run.one_thread = parallel, one_thread
    return run


GELU_SCALE = math.sqrt(2.0 / math.pi)  # GPT-2's tanh approximation: 0.5x(1+tanh(s(x+0.044715x^3)))
GELU_CUBIC = 0.044715


# --------------------------------------------------------------------------------------------
# exp that vectorises
#
# A loop that calls math.exp compiles to a call of libm's scalar exp per element (this LLVM
# has no vector math library), and NumPy's float32 exp runs on one core. `fast_exp` in a
# float32 kernel is instead a few float32 multiply-adds that LLVM turns into AVX2 / AVX-512
# instructions: measured on an AVX2 host, 0.09 ms per 262,144 elements on one thread against
# NumPy's 0.61 ms. It is Cephes' expf: exp(x) = 2^n exp(r) with n = round(x / ln 2) and
# |r| <= ln(2) / 2, ln 2 split in two so that r is exact, a degree-7 polynomial for exp(r),
# and 2^n made from its IEEE-754 bits. Relative error below 1e-7 (one float32 rounding) on
# [-87.33, 88.3] (tests/test_kernels.py); outside, x is clamped, so no inf or NaN can appear.
# float64 kernels (the gradient checks) get math.exp.

EXP_LOW, EXP_HIGH = np.float32(-87.33), np.float32(88.3)  # 2^n stays a normal float32
EXP_LOG2E = np.float32(1.4426950408889634)
EXP_LN2_HIGH, EXP_LN2_LOW = np.float32(0.693359375), np.float32(-2.12194440e-4)
EXP_POLY = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                          4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))


@intrinsic
def _float32_from_bits(typingctx, bits):
    """The float32 whose IEEE-754 bits are the int32 `bits` (a reinterpretation, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return numba_types.float32(numba_types.int32), codegen


def fast_exp(x):
    """exp(x) for one number inside a kernel: see above. (Called from Python, math.exp.)"""
    return math.exp(x)


# Fast-math without reassociation: reordering would undo the exact split of x - n ln 2.
@overload(fast_exp, jit_options={"fastmath": {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}})
def _fast_exp(x):
    if not (isinstance(x, numba_types.Float) and x.bitwidth == 32):
        return lambda x: math.exp(x)
    p0, p1, p2, p3, p4, p5 = EXP_POLY
    half, one, bias, shift = np.float32(0.5), np.float32(1.0), np.int32(127), np.int32(23)

    def exp_float32(x):
        x = min(max(x, EXP_LOW), EXP_HIGH)
        n = np.floor(x * EXP_LOG2E + half)
        r = x - n * EXP_LN2_HIGH - n * EXP_LN2_LOW
        p = ((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5
        return (p * (r * r) + r + one) * _float32_from_bits((np.int32(n) + bias) << shift)
    return exp_float32


# --------------------------------------------------------------------------------------------
# Dropout masks from a counter-based generator
#
# Element i of a call with seed s is kept when the top 32 bits of SplitMix64's output for
# counter i, mix(s + (i + 1) * golden), are at least threshold = round(p * 2^32). Each element's
# bit depends only on (s, i), so the mask is made in parallel, in the same pass that applies
# it, with the same result for any number of threads; and backward re-makes it from the seed
# instead of keeping a mask as large as the activation.

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
DROPOUT_CHUNK = 4096


def dropout_threshold(p: float) -> int:
    """Kept iff the 32-bit draw >= threshold: P(keep) = 1 - threshold / 2^32 = 1 - p (+-1.2e-10)."""
    return round(p * 2.0 ** 32)


def dropout_keep_reference(seed, n, threshold, offset=0):
    """(n,) bool: which of the elements offset..offset+n-1 a call with this seed keeps (NumPy's
    uint64 arithmetic wraps, as SplitMix64 needs)."""
    z = np.uint64(seed) + (np.arange(offset, offset + n, dtype=np.uint64) + np.uint64(1)) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)) >= np.uint64(threshold)


def dropout_apply_reference(x, out, seed, threshold, scale, offset):
    out[...] = x * dropout_keep_reference(seed, x.size, threshold, offset).reshape(x.shape) * scale


@njit(cache=True)
def _keep(seed, i, threshold):
    z = seed + np.uint64(i + 1) * GOLDEN
    z = (z ^ (z >> np.uint64(30))) * MIX1
    z = (z ^ (z >> np.uint64(27))) * MIX2
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)) >= threshold


@parallel_kernel
def dropout_apply(x, out, seed, threshold, scale, offset):
    """out = x * keep * scale, elementwise over flat x and out (which may be x itself), with
    keep from (seed, offset + index) as in dropout_keep_reference. Forward and backward both
    use it; the offset numbers a data-parallel rank's elements within the global batch."""
    n = x.size
    seed = np.uint64(seed)
    threshold = np.uint64(threshold)
    for chunk in prange((n + DROPOUT_CHUNK - 1) // DROPOUT_CHUNK):
        for i in range(chunk * DROPOUT_CHUNK, min(n, (chunk + 1) * DROPOUT_CHUNK)):
            out[i] = x[i] * scale if _keep(seed, offset + i, threshold) else 0.0


# --------------------------------------------------------------------------------------------
# Linear's bias: NumPy's broadcast add runs on one core; this splits the rows. (NumPy's own
# axis-0 sum is faster than a Numba one for the bias gradient, so that stays NumPy.)


def add_bias_reference(out, bias):
    out += bias


@parallel_kernel
def add_bias(out, bias):
    """out (N, C) += bias (C,) on every row, in place."""
    n, c = out.shape
    for i in prange(n):
        for j in range(c):
            out[i, j] += bias[j]


# --------------------------------------------------------------------------------------------
# LayerNorm


def layernorm_forward_reference(x, weight, bias, eps, out, mean, rstd):
    """x: (N, C) -> out (N, C), mean (N,), rstd (N,), written in place:
    out = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps), per row."""
    mean[:] = x.mean(axis=1)
    rstd[:] = 1.0 / np.sqrt(((x - mean[:, None]) ** 2).mean(axis=1) + eps)
    out[:] = (x - mean[:, None]) * rstd[:, None] * weight + bias


def layernorm_backward_reference(dout, x, mean, rstd, weight, dx, dweight, dbias):
    """dx (N, C) written; dweight and dbias (C,) accumulated. See layers.LayerNorm.backward."""
    xhat = (x - mean[:, None]) * rstd[:, None]
    dbias += dout.sum(axis=0)
    dweight += (dout * xhat).sum(axis=0)
    dxhat = dout * weight
    dx[:] = rstd[:, None] * (dxhat - dxhat.mean(axis=1, keepdims=True)
                             - xhat * (dxhat * xhat).mean(axis=1, keepdims=True))


@parallel_kernel
def layernorm_forward(x, weight, bias, eps, out, mean, rstd):
    """In place: out (N, C), mean (N,), rstd (N,) from x (N, C). Two passes over each row."""
    n, c = x.shape
    for i in prange(n):
        m = 0.0
        for j in range(c):
            m += x[i, j]
        m /= c
        var = 0.0
        for j in range(c):
            d = x[i, j] - m
            var += d * d
        s = 1.0 / math.sqrt(var / c + eps)
        for j in range(c):
            out[i, j] = (x[i, j] - m) * s * weight[j] + bias[j]
        mean[i] = m
        rstd[i] = s


@parallel_kernel
def layernorm_backward(dout, x, mean, rstd, weight, dx, dweight, dbias):
    """In place: dx (N, C) written; dweight (C,) and dbias (C,) accumulated (+=).

    Rows split across cores for dx. The parameter gradients sum over rows, so each chunk of
    rows sums into its own partial row and the partials are added at the end (no races).
    """
    n, c = x.shape
    n_chunks = min(n, 64)
    partial_w = np.zeros((n_chunks, c), dtype=dweight.dtype)
    partial_b = np.zeros((n_chunks, c), dtype=dbias.dtype)
    for chunk in prange(n_chunks):
        for i in range(chunk * n // n_chunks, (chunk + 1) * n // n_chunks):
            m = mean[i]
            s = rstd[i]
            # The two row means that make LayerNorm's Jacobian differ from a plain scale.
            mean_dxhat = 0.0
            mean_dxhat_xhat = 0.0
            for j in range(c):
                xhat = (x[i, j] - m) * s
                dxhat = dout[i, j] * weight[j]
                mean_dxhat += dxhat
                mean_dxhat_xhat += dxhat * xhat
                partial_w[chunk, j] += dout[i, j] * xhat
                partial_b[chunk, j] += dout[i, j]
            mean_dxhat /= c
            mean_dxhat_xhat /= c
            for j in range(c):
                xhat = (x[i, j] - m) * s
                dx[i, j] = s * (dout[i, j] * weight[j] - mean_dxhat - xhat * mean_dxhat_xhat)
    for chunk in range(n_chunks):
        for j in range(c):
            dweight[j] += partial_w[chunk, j]
            dbias[j] += partial_b[chunk, j]


# --------------------------------------------------------------------------------------------
# GELU, tanh approximation


def gelu_forward_reference(x, out, sig):
    """out = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), on flat (M,) arrays; sig
    gets 0.5 (1 + tanh u), the sigmoid the fast backward reuses (this one recomputes it)."""
    sig[:] = 0.5 * (1.0 + np.tanh(GELU_SCALE * (x + GELU_CUBIC * x ** 3)))
    out[:] = x * sig


def gelu_backward_reference(dout, x, sig, dx):
    """dx = dout * d/dx of 0.5x(1+tanh(u)): 0.5(1+tanh u) + 0.5x(1-tanh^2 u) u'."""
    u = GELU_SCALE * (x + GELU_CUBIC * x ** 3)
    t = np.tanh(u)
    du = GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x ** 2)
    dx[:] = dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


# GELU in the function's sigmoid form, 0.5 (1 + tanh u) = 1 / (1 + exp(-2u)) = s:
#   gelu(x)  = x s
#   gelu'(x) = s + 2 x s (1 - s) du/dx
# one pass with fast_exp (libm's scalar tanh made GELU the slowest kernel). s = 1 / (1 + e) never
# subtracts nearly equal numbers (1 + tanh u would, for x << 0); forward keeps s, so backward
# needs no exp. Its 1 - s rounds only where s is near 1 (x >> 0), where the term it scales is
# negligible beside s.


@parallel_kernel
def gelu_forward(x, out, sig):
    """out = gelu(x) and sig = the sigmoid s that backward needs, elementwise on flat (M,)
    arrays: keeping sig (one more activation) spares backward an exp. exp's argument -2u is
    clamped to +-80, where s is 0 or 1 to 2e-35."""
    f = x.dtype.type  # constants in x's precision: a float64 literal would promote float32 math
    scale, cubic, limit, one = f(-2.0 * GELU_SCALE), f(GELU_CUBIC), f(80.0), f(1.0)
    # Below half an ulp of 1, 1 + e rounds to 1 and s is exactly 1, so that backward's 1 - s is
    # exactly 0 where x is large (fast-math's reciprocal would give 1 - 6e-8, which x du^3
    # turns into a relative error of 3e-5 in dx at x = 13).
    tiny = f(np.finfo(x.dtype).epsneg / 2)
    for i in prange(x.size):
        v = x[i]
        e = fast_exp(min(max(scale * (v + cubic * v * v * v), -limit), limit))
        s = one if e < tiny else one / (one + e)
        sig[i] = s
        out[i] = v * s


@parallel_kernel
def gelu_backward(dout, x, sig, dx):
    """dx = dout * gelu'(x) = dout * (s + 2 x s (1 - s) du/dx) from forward's s, elementwise on
    flat (M,) arrays; no exp. dx may alias dout."""
    f = x.dtype.type
    scale, three_cubic, one, two = f(GELU_SCALE), f(3.0 * GELU_CUBIC), f(1.0), f(2.0)
    for i in prange(x.size):
        v = x[i]
        s = sig[i]
        du = scale * (one + three_cubic * v * v)
        dx[i] = dout[i] * (s + two * v * s * (one - s) * du)


# --------------------------------------------------------------------------------------------
# Causal softmax for attention scores


def masked_softmax(scores, visible):
    """In place on scores (..., S): the softmax over the last axis of the entries where
    `visible` (a bool array that broadcasts to scores) is True, and exactly 0 elsewhere. Every
    row must see at least one entry. The one definition of attention's softmax: the cached
    attention of generation uses it as it is, the causal kernels below must equal it."""
    np.copyto(scores, -np.inf, where=~visible)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)
    return scores


# Causal attention cut into tiles of query rows (CausalSelfAttention): the rows of tile i see the
# keys of tiles 0..i, so the scores are computed for those columns only, and the rest of the
# (T, T) square, about half of it, is neither computed nor read. Row r's "reach" is the end of
# its tile, (r // tile + 1) * tile: its columns <= r hold the softmax, the columns after r up to
# the reach hold 0, and the columns from the reach on are left as they are. tile >= T is the
# whole square.


def causal_reach(t, tile):
    """(T, T) bool: the entries a causal kernel on tiles of `tile` rows reads and writes."""
    ends = np.minimum((np.arange(t) // tile + 1) * tile, t)
    return np.arange(t) < ends[:, None]


def causal_softmax_forward_reference(scores, scale, tile):
    """In place on scores (BH, T, T) within each row's reach: raw q.k -> probabilities, row t
    attending only to columns <= t."""
    t = scores.shape[-1]
    probs = masked_softmax(scores * scale, np.tri(t, dtype=bool))
    np.copyto(scores, probs, where=causal_reach(t, tile))


def causal_softmax_backward_reference(dprobs, probs, scale, tile):
    """In place within each row's reach: dprobs becomes d scores = scale * p * (dp - sum_k p_k dp_k),
    the softmax Jacobian-vector product (0 above the diagonal, where p is 0)."""
    t = probs.shape[-1]
    below = np.tri(t, dtype=bool)
    p, dp = np.where(below, probs, 0), np.where(below, dprobs, 0)  # what lies past the reach is not data
    np.copyto(dprobs, scale * p * (dp - (dp * p).sum(axis=-1, keepdims=True)), where=causal_reach(t, tile))


@parallel_kernel
def causal_softmax_forward(scores, scale, tile):
    """In place on scores (BH, T, T) within each row's reach: each row t becomes
    softmax(scale * scores[t, :t+1]), then zeros. No -inf mask is ever built: the row's max is
    taken over its columns <= t, so every exp argument is <= 0 and the largest is 0."""
    bh, t, _ = scores.shape
    f = scores.dtype.type
    scale = f(scale)
    for b in prange(bh):
        for i in range(t):
            reach = min(t, (i // tile + 1) * tile)
            row = scores[b, i]
            mx = row[0]
            for j in range(1, i + 1):
                mx = max(mx, row[j])
            total = f(0.0)
            for j in range(i + 1):
                e = fast_exp((row[j] - mx) * scale)
                row[j] = e
                total += e
            inv = f(1.0) / total
            for j in range(i + 1):
                row[j] *= inv
            for j in range(i + 1, reach):
                row[j] = 0.0


@parallel_kernel
def causal_softmax_backward(dprobs, probs, scale, tile):
    """In place: dprobs (BH, T, T) becomes the gradient of the raw scores within each row's
    reach (0 above the diagonal)."""
    bh, t, _ = probs.shape
    for b in prange(bh):
        for i in range(t):
            reach = min(t, (i // tile + 1) * tile)
            dot = 0.0
            for j in range(i + 1):
                dot += dprobs[b, i, j] * probs[b, i, j]
            for j in range(i + 1):
                dprobs[b, i, j] = scale * probs[b, i, j] * (dprobs[b, i, j] - dot)
            for j in range(i + 1, reach):
                dprobs[b, i, j] = 0.0


# Attention-weight dropout, on the causal triangle only: above the diagonal the weights are 0
# and stay 0, so half the square needs no keep bit. Element (b, i, j) is numbered as in
# dropout_apply over the flat (BH, T, T) array, so the masks are those of Dropout on the
# whole square (and a data-parallel rank's offset works unchanged).


def causal_dropout_reference(probs, att, seed, threshold, scale, offset, tile):
    """att = dropout of probs with the mask of the whole (BH, T, T) square, within each row's
    reach (above the diagonal probs is 0, so the mask does not matter there)."""
    dropped = np.empty_like(probs)
    dropout_apply_reference(probs, dropped, seed, threshold, scale, offset)
    np.copyto(att, dropped, where=causal_reach(probs.shape[-1], tile))


def causal_dropout_softmax_backward_reference(datt, probs, scale, seed, threshold, drop_scale, offset, tile):
    """Dropout's backward (the same mask, from the seed), then the softmax backward, in place
    within each row's reach."""
    dprobs = np.empty_like(datt)
    dropout_apply_reference(datt, dprobs, seed, threshold, drop_scale, offset)
    causal_softmax_backward_reference(dprobs, probs, scale, tile)
    np.copyto(datt, dprobs, where=causal_reach(probs.shape[-1], tile))


@parallel_kernel
def causal_dropout(probs, att, seed, threshold, scale, offset, tile):
    """att (BH, T, T) = probs * keep * scale on each row's columns <= t, 0 after, up to its reach."""
    bh, t, _ = probs.shape
    seed = np.uint64(seed)
    threshold = np.uint64(threshold)
    for b in prange(bh):
        for i in range(t):
            reach = min(t, (i // tile + 1) * tile)
            first = offset + (b * t + i) * t
            for j in range(i + 1):
                att[b, i, j] = probs[b, i, j] * scale if _keep(seed, first + j, threshold) else 0.0
            for j in range(i + 1, reach):
                att[b, i, j] = 0.0


@parallel_kernel
def causal_dropout_softmax_backward(datt, probs, scale, seed, threshold, drop_scale, offset, tile):
    """causal_softmax_backward of (dropout backward of datt) in one pass, in place on datt
    (BH, T, T) within each row's reach: dp = datt * keep * drop_scale, then
    d scores = scale * p * (dp - sum_k p_k dp_k)."""
    bh, t, _ = probs.shape
    seed = np.uint64(seed)
    threshold = np.uint64(threshold)
    for b in prange(bh):
        for i in range(t):
            reach = min(t, (i // tile + 1) * tile)
            first = offset + (b * t + i) * t
            dot = 0.0
            for j in range(i + 1):
                dp = datt[b, i, j] * drop_scale if _keep(seed, first + j, threshold) else 0.0
                datt[b, i, j] = dp
                dot += dp * probs[b, i, j]
            for j in range(i + 1):
                datt[b, i, j] = scale * probs[b, i, j] * (datt[b, i, j] - dot)
            for j in range(i + 1, reach):
                datt[b, i, j] = 0.0


# --------------------------------------------------------------------------------------------
# Softmax cross-entropy over the vocabulary


def cross_entropy_forward_reference(logits, targets, ignore_index, row_losses):
    """In place: logits (N, V) become probabilities; row_losses (N,) gets each row's
    -log p[target] = logsumexp(z) - z[target] (0 on ignored rows)."""
    z = logits - logits.max(axis=1, keepdims=True)
    logsumexp = np.log(np.exp(z).sum(axis=1))
    kept = targets != ignore_index
    row_losses[:] = np.where(kept, logsumexp - z[np.arange(len(z)), np.where(kept, targets, 0)], 0.0)
    logits[...] = np.exp(z - logsumexp[:, None])


def cross_entropy_backward_reference(probs, targets, ignore_index, scale):
    """In place: probs (N, V) become dlogits = scale * (probs - onehot(targets)), 0 on ignored rows."""
    kept = targets != ignore_index
    rows = np.nonzero(kept)[0]
    probs[rows, targets[rows]] -= 1.0
    probs[~kept] = 0.0
    probs *= scale


@parallel_kernel
def cross_entropy_forward(logits, targets, ignore_index, row_losses):
    """In place: logits (N, V) become probabilities; row_losses (N,) gets -log p[target] (0 on
    ignored rows), as log(sum exp(z)) - z[target] with z = x - max(x): exact even where
    p[target] underflows to 0, and exp(z) <= 1 never overflows. Each row is read three times
    (max; exp and sum; normalise) while it is in the cache."""
    n, v = logits.shape
    f = logits.dtype.type
    for i in prange(n):
        row = logits[i]
        mx = row[0]
        for j in range(1, v):
            mx = max(mx, row[j])
        target = targets[i]
        row_losses[i] = 0.0 if target == ignore_index else mx - row[target]
        total = 0.0  # float64: V terms (50,257 for GPT-2)
        for j in range(v):
            e = fast_exp(row[j] - mx)
            row[j] = e
            total += e
        if target != ignore_index:
            row_losses[i] += math.log(total)
        inv = f(1.0 / total)
        for j in range(v):
            row[j] *= inv


@parallel_kernel
def cross_entropy_backward(probs, targets, ignore_index, scale):
    """In place: probs (N, V) become dlogits = scale * (probs - onehot); ignored rows become 0."""
    n, v = probs.shape
    for i in prange(n):
        row = probs[i]
        target = targets[i]
        if target == ignore_index:
            for j in range(v):
                row[j] = 0.0
        else:
            for j in range(v):
                row[j] *= scale
            row[target] -= scale


# --------------------------------------------------------------------------------------------
# Embedding backward


def embedding_backward_reference(dweight, ids, dout):
    """dweight (V, C) += scatter-add of dout (N, C) rows at ids (N,); repeated ids sum."""
    np.add.at(dweight, ids, dout)


@parallel_kernel
def embedding_backward(dweight, ids, dout):
    """In place: dweight[ids[i]] += dout[i]. Columns split across cores: two rows of dout may
    hit the same id, so splitting rows would race, but column blocks never overlap."""
    n, c = dout.shape
    block = 64
    n_blocks = (c + block - 1) // block
    for b in prange(n_blocks):
        lo = b * block
        hi = min(c, lo + block)
        for i in range(n):
            row = ids[i]
            for j in range(lo, hi):
                dweight[row, j] += dout[i, j]


# --------------------------------------------------------------------------------------------
# AdamW


def sum_of_squares_reference(x):
    return float(np.sum(x.astype(np.float64) ** 2))


def adamw_reference(param, grad, m, v, weight_decay, lr, beta1, beta2, eps, step):
    """One AdamW step in place, with decoupled weight decay."""
    m[:] = beta1 * m + (1 - beta1) * grad
    v[:] = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    param[:] = param - lr * (m_hat / (np.sqrt(v_hat) + eps) + weight_decay * param)


@parallel_kernel
def adamw(param, grad, m, v, weight_decay, lr, beta1, beta2, eps, step):
    """One pass over flat (P,) buffers: moments, bias correction, decay, update. Called once
    per run of parameters that share a weight decay (0 for biases and LayerNorm gains)."""
    correction1 = 1.0 - beta1 ** step
    correction2 = 1.0 - beta2 ** step
    for i in prange(param.size):
        g = grad[i]
        mi = beta1 * m[i] + (1.0 - beta1) * g
        vi = beta2 * v[i] + (1.0 - beta2) * g * g
        m[i] = mi
        v[i] = vi
        param[i] -= lr * ((mi / correction1) / (math.sqrt(vi / correction2) + eps) + weight_decay * param[i])


@parallel_kernel
def sum_of_squares(x):
    """Sum of x*x over a flat array, accumulated in float64 (for the global gradient norm)."""
    total = 0.0
    for i in prange(x.size):
        total += np.float64(x[i]) * np.float64(x[i])
    return total


# --------------------------------------------------------------------------------------------
# int8 weights times float32 activations, for generation (numpygpt.inference.quantize)
#
# A weight matrix is kept as int8 rows, one per output channel, each with a float32 scale:
# W[i, j] = w[j, i] * scale[j]. Decoding a token reads every weight once, so an int8 weight is a
# quarter of the bytes of a float32 one, and memory bandwidth is what a decoding step is bound by.


def int8_matmul_reference(w, scale, x, out):
    """out (N, C_out) = x (N, C_in) @ W, with W's column j = w[j] (C_in,) int8 * scale[j]."""
    out[...] = x @ (w.astype(np.float32) * scale[:, None]).T


INT8_BLOCK = 16  # output channels per task: their rows share the reads of x


@parallel_kernel
def int8_matmul(w, scale, x, out):
    """int8_matmul_reference, for few rows (decoding): split over blocks of output channels,
    each int8 row read once and widened in registers, sums in float32."""
    c_out, c_in = w.shape
    n = x.shape[0]
    for block in prange((c_out + INT8_BLOCK - 1) // INT8_BLOCK):
        for j in range(block * INT8_BLOCK, min(c_out, (block + 1) * INT8_BLOCK)):
            for r in range(n):
                total = x.dtype.type(0.0)
                for i in range(c_in):
                    total += x[r, i] * x.dtype.type(w[j, i])  # widened to x's type, not to float64
                out[r, j] = total * scale[j]


# --------------------------------------------------------------------------------------------
# The model on plain NumPy: NUMPYGPT_KERNELS=numpy (set before numpygpt is imported) puts each
# reference in its kernel's place, so every layer, the loss and AdamW run the NumPy above.
# Slower (docs/backprop.md measures it), and the same results to float rounding.

KERNELS = ("dropout_apply", "add_bias", "layernorm_forward", "layernorm_backward", "gelu_forward",
           "gelu_backward", "causal_softmax_forward", "causal_softmax_backward", "causal_dropout",
           "causal_dropout_softmax_backward", "cross_entropy_forward", "cross_entropy_backward",
           "embedding_backward", "adamw", "sum_of_squares", "int8_matmul")
KERNEL_CHOICES = ("numba", "numpy")
CHOICE = os.environ.get("NUMPYGPT_KERNELS", "numba")
if CHOICE == "numpy":
    for _name in KERNELS:
        globals()[_name] = globals()[_name + "_reference"]
