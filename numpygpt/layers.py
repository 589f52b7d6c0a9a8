"""GPT-2's layers, each a forward/backward pair side by side.

The contract, for every layer:
- `forward(x, ...)` returns the output and keeps exactly what `backward` will need.
- `backward(dout)` takes dL/d(output) and returns dL/d(input). Parameter gradients are
  *accumulated* (`+=`) into the views of the model's flat gradient buffer, so a weight used
  twice (the tied embedding) and several micro-batches (gradient accumulation) both just add up.
- Dropout is active only when a `numpy.random.Generator` is passed to `forward`: training
  passes one, evaluation passes None. The generator is the only source of randomness.
- `backward` lets go of what `forward` kept (`x, self.x = self.x, None`), so activations are
  freed layer by layer as the gradient flows down, as PyTorch's autograd frees its graph: the
  memory they held serves the backward pass's own temporaries.

Shapes: B batch, T time (tokens), C width (n_embd), H heads, D = C / H head size, V vocab.
Activations are float32 (float64 for gradient checks); matmuls are reshaped to 2-D for BLAS.
"""
import math

import numpy as np

from . import kernels


ACCUMULATE_ROWS = 4096
# Query rows per tile of causal attention (CausalSelfAttention.tiles): T / tile tiles do
# (T / tile + 1) / 2 of the whole square's work, in BLAS calls that stay large enough to be fast.
# Measured per layer (benchmarks/bench_attention.py, AVX2 host): 1.13x at T = 1024 (tiles of
# 64 to 256 alike), 1.00-1.04x at T = 256; at T = 128 two tiles of 64 lost (0.92x), so a context
# of 128 or less is one tile, the whole square.
ATTENTION_TILE = 128


def accumulate_matmul(out, a, b):
    """out += a @ b, a block of out's rows at a time, so the temporary product is at most
    ACCUMULATE_ROWS rows (NumPy's matmul cannot add into its output). For GPT-2's LM head,
    dW += dlogits.T @ x would otherwise make a 154 MB temporary every step."""
    for start in range(0, out.shape[0], ACCUMULATE_ROWS):
        out[start:start + ACCUMULATE_ROWS] += a[start:start + ACCUMULATE_ROWS] @ b


class Embedding:
    """Row lookup: out[..., :] = weight[ids[...]]. weight: (V, C)."""

    @staticmethod
    def shapes(name, n_rows, width) -> dict:
        return {f"{name}.weight": (n_rows, width)}

    def __init__(self, params, name):
        self.weight = params[f"{name}.weight"]
        self.dweight = params.grads[f"{name}.weight"]

    def forward(self, ids):
        """ids: (...,) integers -> (..., C)."""
        self.ids = ids
        return self.weight[ids]

    def backward(self, dout):
        """dout: (..., C). Nothing flows to the integer ids.

        out[n] = weight[ids[n]], so dL/dweight[v] = sum of dout[n] over every n with ids[n] == v:
        a scatter-add, where a repeated id collects the sum of all its rows.
        """
        c = self.weight.shape[1]
        kernels.embedding_backward(self.dweight, self.ids.reshape(-1), dout.reshape(-1, c))


class LayerNorm:
    """out = (x - mean) / sqrt(var + eps) * weight + bias over the last axis. weight, bias: (C,)."""

    @staticmethod
    def shapes(name, width) -> dict:
        return {f"{name}.weight": (width,), f"{name}.bias": (width,)}

    def __init__(self, params, name, eps=1e-5):
        self.weight = params[f"{name}.weight"]
        self.bias = params[f"{name}.bias"]
        self.dweight = params.grads[f"{name}.weight"]
        self.dbias = params.grads[f"{name}.bias"]
        self.eps = eps

    def forward(self, x):
        """x: (..., C) -> (..., C). Keeps x, and per row the mean and 1/std (rstd)."""
        self.x = x.reshape(-1, x.shape[-1])
        n = self.x.shape[0]
        out = np.empty_like(self.x)
        self.mean = np.empty(n, dtype=x.dtype)
        self.rstd = np.empty(n, dtype=x.dtype)
        kernels.layernorm_forward(self.x, self.weight, self.bias, self.eps, out, self.mean, self.rstd)
        return out.reshape(x.shape)

    def backward(self, dout):
        """dout: (..., C) -> dx (..., C); += dweight, dbias.

        With xhat = (x - mean) * rstd and out = xhat * w + b, per row of C features:
          dbias   += dout                      (summed over rows)
          dweight += dout * xhat               (summed over rows)
          dxhat    = dout * w
        xhat depends on x directly and through the row's mean and variance, which gives
          dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        The two subtracted means are the terms that a naive "divide by std" backward forgets.
        """
        (x, mean, rstd), self.x, self.mean, self.rstd = (self.x, self.mean, self.rstd), None, None, None
        dout2 = dout.reshape(x.shape)
        dx = np.empty_like(x)
        kernels.layernorm_backward(dout2, x, mean, rstd, self.weight, dx, self.dweight, self.dbias)
        return dx.reshape(dout.shape)


class Linear:
    """out = x @ weight + bias. weight: (C_in, C_out), the layout GPT-2's Conv1D stores."""

    @staticmethod
    def shapes(name, c_in, c_out, bias=True) -> dict:
        return {f"{name}.weight": (c_in, c_out), **({f"{name}.bias": (c_out,)} if bias else {})}

    def __init__(self, params, name, bias=True):
        self.weight = params[f"{name}.weight"]
        self.dweight = params.grads[f"{name}.weight"]
        self.bias = params[f"{name}.bias"] if bias else None
        self.dbias = params.grads[f"{name}.bias"] if bias else None

    def forward(self, x):
        """x: (..., C_in) -> (..., C_out), as one (N, C_in) @ (C_in, C_out) BLAS call."""
        self.x = x.reshape(-1, x.shape[-1])
        out = self.x @ self.weight
        if self.bias is not None:
            kernels.add_bias(out, self.bias)
        return out.reshape(*x.shape[:-1], self.weight.shape[1])

    def backward(self, dout):
        """dout: (..., C_out) -> dx (..., C_in); += dweight, dbias.

        out[n, j] = sum_i x[n, i] W[i, j] + b[j], so with the N rows flattened:
          dW += x.T @ dout     (C_in, N) @ (N, C_out)
          db += dout summed over rows
          dx  = dout @ W.T     (N, C_out) @ (C_out, C_in)
        """
        x, self.x = self.x, None
        dout2 = dout.reshape(-1, self.weight.shape[1])
        accumulate_matmul(self.dweight, x.T, dout2)
        if self.bias is not None:
            self.dbias += dout2.sum(axis=0)
        return (dout2 @ self.weight.T).reshape(*dout.shape[:-1], self.weight.shape[0])


class GELU:
    """GPT-2's tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).

    Written as x * sigmoid(2u) with u = sqrt(2/pi) (x + 0.044715 x^3), the same function;
    forward keeps x and the sigmoid s, so backward needs no exp.
    """

    def forward(self, x):
        self.x = x
        self.sig = np.empty_like(x)
        out = np.empty_like(x)
        kernels.gelu_forward(x.reshape(-1), out.reshape(-1), self.sig.reshape(-1))
        return out

    def backward(self, dout):
        """dx = dout * gelu'(x), elementwise, where with u = s (x + 0.044715 x^3):
          gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) * s (1 + 3 * 0.044715 x^2)
        which in terms of the sigmoid s = 0.5 (1 + tanh u) is s + 2 x s (1 - s) du/dx.
        """
        (x, sig), self.x, self.sig = (self.x, self.sig), None, None
        dx = np.empty_like(dout)
        kernels.gelu_backward(np.ascontiguousarray(dout).reshape(-1), x.reshape(-1), sig.reshape(-1), dx.reshape(-1))
        return dx


class Dropout:
    """Zero each element with probability p while training, and scale the survivors by 1/(1-p)
    so the expected output equals the input; the identity in evaluation (rng is None).

    The mask comes from a counter-based generator (kernels.dropout_apply): one 64-bit seed
    drawn from `rng` per call fixes every element's keep bit, so forward makes and applies the
    mask in one parallel pass and backward makes it again from the seed; no mask is stored.
    Attention's weights use `draw` with kernels of their own that touch only the causal
    triangle (CausalSelfAttention).
    """

    def __init__(self, p):
        self.p = p
        self.threshold = kernels.dropout_threshold(p)
        self.scale = 1.0 / (1.0 - p)

    def draw(self, rng, size) -> bool:
        """Start one call on `size` elements: draw its seed (and its data-parallel offset).
        False when dropout is off (evaluation, or p = 0)."""
        if rng is None or self.p == 0.0:
            self.seed = None
            return False
        self.seed = int(rng.integers(0, 2 ** 63))
        # Under data parallelism (dist.RankRows) the array holds rows rank*B.. of the global
        # batch, so its elements are those numbered from rank * size in the global batch's mask.
        self.offset = getattr(rng, "rank", 0) * size
        return True

    def forward(self, x, rng, inplace=False):
        """inplace: x is the caller's own fresh array, not kept by anyone: overwrite it rather
        than allocate the output."""
        if not self.draw(rng, x.size):
            return x
        x = np.ascontiguousarray(x)
        out = x if inplace else np.empty_like(x)
        kernels.dropout_apply(x.reshape(-1), out.reshape(-1), self.seed, self.threshold, self.scale, self.offset)
        return out

    def backward(self, dout):
        """out = x * keep / (1 - p), so dx = dout * keep / (1 - p): dropped elements pass no gradient."""
        seed, self.seed = self.seed, None
        if seed is None:
            return dout
        dout = np.ascontiguousarray(dout)
        dx = np.empty_like(dout)
        kernels.dropout_apply(dout.reshape(-1), dx.reshape(-1), seed, self.threshold, self.scale, self.offset)
        return dx


class CausalSelfAttention:
    """Multi-head self-attention where position t sees only positions <= t.

    c_attn: (C, 3C) fused q/k/v projection; c_proj: (C, C) output projection.
    """

    @staticmethod
    def shapes(name, width, qkv_bias=True, bias=True) -> dict:
        return {**Linear.shapes(f"{name}.c_attn", width, 3 * width, qkv_bias),
                **Linear.shapes(f"{name}.c_proj", width, width, bias)}

    def __init__(self, params, name, n_head, dropout, qkv_bias=True, bias=True):
        self.c_attn = Linear(params, f"{name}.c_attn", bias=qkv_bias)
        self.c_proj = Linear(params, f"{name}.c_proj", bias=bias)
        self.attn_dropout = Dropout(dropout)
        self.resid_dropout = Dropout(dropout)
        self.n_head = n_head
        self.tile = ATTENTION_TILE

    def forward(self, x, rng=None):
        """x: (B, T, C) -> (B, T, C).

        The products with the (T, T) weights go tile by tile (see `tiles`): the query rows of
        tile i against the keys of tiles 0..i only, so the square's upper part, about half of
        its work, is never computed; each tile is still one batched BLAS call."""
        b, t, c = x.shape
        h, d = self.n_head, c // self.n_head
        self.scale = 1.0 / math.sqrt(d)
        qkv = self.c_attn.forward(x)                                  # (B, T, 3C)
        # q, k, v as (B, H, T, D) views of qkv, no copies: each head's (T, D) matrix has rows
        # 3C apart and unit-stride columns, which BLAS reads in place (its leading dimension).
        q, k, v = (qkv.reshape(b, t, 3, h, d)[:, :, i].transpose(0, 2, 1, 3) for i in range(3))
        scores = np.empty((b, h, t, t), dtype=x.dtype)
        for rows, keys in self.tiles(t):
            np.matmul(q[:, :, rows], k[:, :, keys].swapaxes(-1, -2), out=scores[:, :, rows, keys])
        kernels.causal_softmax_forward(scores.reshape(b * h, t, t), self.scale, self.tile)
        probs = scores                                                # softmaxed in place
        att, drop = probs, self.attn_dropout
        if drop.draw(rng, probs.size):                                # dropout on the triangle
            att = np.empty_like(probs)
            kernels.causal_dropout(probs.reshape(b * h, t, t), att.reshape(b * h, t, t),
                                   drop.seed, drop.threshold, drop.scale, drop.offset, self.tile)
        y = np.empty((b, t, h, d), dtype=x.dtype)                     # heads side by side...
        y_heads = y.transpose(0, 2, 1, 3)                             # ...written there directly
        for rows, keys in self.tiles(t):
            np.matmul(att[:, :, rows, keys], v[:, :, keys], out=y_heads[:, :, rows])
        self.q, self.k, self.v, self.probs, self.att = q, k, v, probs, att
        return self.resid_dropout.forward(self.c_proj.forward(y.reshape(b, t, c)), rng, inplace=True)

    def tiles(self, t):
        """(rows, keys) slices, a tile of `self.tile` query rows each: those rows attend to
        the keys before the tile's end and to none after it (causality). The entries of the
        (T, T) arrays outside these rectangles are never written or read."""
        return [(slice(start, start + self.tile), slice(0, min(start + self.tile, t)))
                for start in range(0, t, self.tile)]

    def forward_cached(self, x, k_cache, v_cache, rows, starts):
        """What `forward` gives for new tokens that follow tokens whose keys and values are
        cached (evaluation: no dropout); the new tokens' keys and values join the cache.

        x: (B, T, C), the new tokens after ln_1: row b's sit at positions starts[b]..+T-1.
        k_cache, v_cache: (S, H, T_max, D), this layer's cache of S sequences.
        rows: (B,) int, which of the S sequences the rows of x continue; starts: (B,) int, how
        many tokens each holds already. Returns (B, T, C).

        Row b's i-th new token sees positions 0..starts[b] + i and nothing after: the causal
        mask of `forward`, for sequences of different lengths in one batch.
        """
        b, t, c = x.shape
        h, d = self.n_head, c // self.n_head
        q, k, v = self.c_attn.forward(x).reshape(b, t, 3, h, d).transpose(2, 0, 3, 1, 4)  # each (B, H, T, D)
        positions = starts[:, None] + np.arange(t)                                         # (B, T)
        k_cache[rows[:, None], :, positions] = k.transpose(0, 2, 1, 3)                     # (B, T, H, D)
        v_cache[rows[:, None], :, positions] = v.transpose(0, 2, 1, 3)
        end = int(positions.max()) + 1
        # Rows 0..B-1 (the common case) are a view of the cache; other rows are gathered.
        read = slice(0, b) if np.array_equal(rows, np.arange(b)) else rows
        keys, values = k_cache[read, :, :end], v_cache[read, :, :end]                     # (B, H, end, D)
        scores = q @ keys.swapaxes(-1, -2)                                                # (B, H, T, end)
        scores *= 1.0 / math.sqrt(d)
        kernels.masked_softmax(scores, np.arange(end) <= positions[:, None, :, None])
        y = scores @ values                                                               # (B, H, T, D)
        return self.c_proj.forward(y.transpose(0, 2, 1, 3).reshape(b, t, c))

    def backward(self, dout):
        """dout: (B, T, C) -> dx (B, T, C).

        Per head, with P = softmax(scale * Q K^T + causal mask) and A = dropout(P), Y = A V:
          dA = dY V^T                         dV = A^T dY
          dP = dropout backward of dA
          dS = scale * P * (dP - rowsum(dP * P))     the softmax Jacobian; masked entries 0
          dQ = dS K                           dK = dS^T Q
        then dQ, dK, dV are laid back side by side as the gradient of the fused qkv output.
        """
        b, t, c = dout.shape
        h, d = self.n_head, c // self.n_head
        (q, k, v, probs, att), self.q, self.k, self.v, self.probs, self.att = \
            (self.q, self.k, self.v, self.probs, self.att), None, None, None, None, None
        dy = self.c_proj.backward(self.resid_dropout.backward(dout))
        dy = dy.reshape(b, t, h, d).transpose(0, 2, 1, 3)            # (B, H, T, D)
        dqkv = np.empty((b, t, 3, h, d), dtype=dout.dtype)
        dq, dk, dv = dqkv.transpose(2, 0, 3, 1, 4)                    # (B, H, T, D) views
        # By key tile, the products with A^T and dS^T need only the query rows from the
        # tile's first row on: the earlier rows do not see those keys.
        query_tiles = self.tiles(t)
        key_tiles = [(rows, slice(rows.start, t)) for rows, _ in query_tiles]
        datt = np.empty((b, h, t, t), dtype=dout.dtype)
        for rows, keys in query_tiles:
            np.matmul(dy[:, :, rows], v[:, :, keys].swapaxes(-1, -2), out=datt[:, :, rows, keys])
        for keys, rows in key_tiles:
            np.matmul(att[:, :, rows, keys].swapaxes(-1, -2), dy[:, :, rows], out=dv[:, :, keys])
        del att
        # dA becomes dS in place: the softmax backward, with dropout's backward fused in (its
        # keep bits made again from the seed) when dropout was on.
        dscores, drop, squares = datt, self.attn_dropout, (b * h, t, t)
        if drop.seed is None:
            kernels.causal_softmax_backward(dscores.reshape(squares), probs.reshape(squares), self.scale, self.tile)
        else:
            kernels.causal_dropout_softmax_backward(dscores.reshape(squares), probs.reshape(squares), self.scale,
                                                    drop.seed, drop.threshold, drop.scale, drop.offset, self.tile)
            drop.seed = None
        del probs, datt
        for rows, keys in query_tiles:
            np.matmul(dscores[:, :, rows, keys], k[:, :, keys], out=dq[:, :, rows])
        for keys, rows in key_tiles:
            np.matmul(dscores[:, :, rows, keys].swapaxes(-1, -2), q[:, :, rows], out=dk[:, :, keys])
        return self.c_attn.backward(dqkv.reshape(b, t, 3 * c))


class MLP:
    """Linear (C -> 4C), GELU, Linear (4C -> C), dropout."""

    @staticmethod
    def shapes(name, width, bias=True) -> dict:
        return {**Linear.shapes(f"{name}.c_fc", width, 4 * width, bias),
                **Linear.shapes(f"{name}.c_proj", 4 * width, width, bias)}

    def __init__(self, params, name, dropout, bias=True):
        self.c_fc = Linear(params, f"{name}.c_fc", bias=bias)
        self.gelu = GELU()
        self.c_proj = Linear(params, f"{name}.c_proj", bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x, rng=None):
        h = self.c_proj.forward(self.gelu.forward(self.c_fc.forward(x)))
        return self.dropout.forward(h, rng, inplace=True)

    def backward(self, dout):
        """The chain rule applied in reverse order of the forward pass."""
        return self.c_fc.backward(self.gelu.backward(self.c_proj.backward(self.dropout.backward(dout))))


class Block:
    """A pre-LN transformer block: x + attn(ln_1(x)), then + mlp(ln_2(.))."""

    @staticmethod
    def shapes(name, config) -> dict:
        c = config.n_embd
        return {**LayerNorm.shapes(f"{name}.ln_1", c),
                **CausalSelfAttention.shapes(f"{name}.attn", c, config.qkv_bias, config.bias),
                **LayerNorm.shapes(f"{name}.ln_2", c), **MLP.shapes(f"{name}.mlp", c, config.bias)}

    def __init__(self, params, name, config):
        self.ln_1 = LayerNorm(params, f"{name}.ln_1")
        self.attn = CausalSelfAttention(params, f"{name}.attn", config.n_head, config.dropout,
                                        qkv_bias=config.qkv_bias, bias=config.bias)
        self.ln_2 = LayerNorm(params, f"{name}.ln_2")
        self.mlp = MLP(params, f"{name}.mlp", config.dropout, bias=config.bias)

    def forward(self, x, rng=None, cache=None):
        """x: (B, T, C) -> (B, T, C). cache: (k_cache, v_cache, rows, starts) for new tokens
        after cached ones (see CausalSelfAttention.forward_cached)."""
        # Each branch returns a fresh array, so the residual sum is added into it in place.
        a = self.ln_1.forward(x)
        h = self.attn.forward(a, rng) if cache is None else self.attn.forward_cached(a, *cache)
        h += x
        out = self.mlp.forward(self.ln_2.forward(h), rng)
        out += h
        return out

    def backward(self, dout):
        """A residual y = x + f(x) has dy/dx = I + f'(x): the gradient takes both paths, the
        identity unchanged and the branch through f's backward, and the two are summed."""
        dx = dout + self.ln_2.backward(self.mlp.backward(dout))
        return dx + self.ln_1.backward(self.attn.backward(dx))


class LMHead:
    """logits = x @ weight.T with weight (V, C): the token embedding itself when tied."""

    def __init__(self, params, name):
        self.weight = params[name]
        self.dweight = params.grads[name]

    def forward(self, x, out=None):
        """x: (B, T, C) -> logits (B, T, V), written into `out` when given."""
        self.x = x.reshape(-1, x.shape[-1])
        v = self.weight.shape[0]
        logits = np.matmul(self.x, self.weight.T, out=None if out is None else out.reshape(-1, v))
        return logits.reshape(*x.shape[:-1], v)

    def backward(self, dlogits):
        """dlogits: (B, T, V) -> dx (B, T, C).
          dW += dlogits.T @ x   (V, N) @ (N, C); when tied this adds to the embedding's gradient
          dx  = dlogits @ W     (N, V) @ (V, C)
        """
        x, self.x = self.x, None
        d2 = dlogits.reshape(-1, self.weight.shape[0])
        accumulate_matmul(self.dweight, d2.T, x)
        return (d2 @ self.weight).reshape(*dlogits.shape[:-1], self.weight.shape[1])
