"""Finite-difference checks for every layer's backward pass, in float64.

Each test builds a layer on shapes drawn by hypothesis (including T = 1 and odd widths), turns
its output into the scalar L = sum(out * G) for a fixed random G, and compares the layer's
analytic gradients (backward(G)) with centred differences of L, for the input and for every
parameter. A missing term in any backward makes the relative error jump far above TOLERANCE.
"""
import numpy as np
from hypothesis import given, settings, strategies as st

from numpygpt.gradcheck import TOLERANCE, check_layer
from numpygpt.layers import (GELU, MLP, Block, CausalSelfAttention, Dropout, Embedding,
                             LayerNorm, Linear, LMHead)
from numpygpt.config import GPTConfig
from numpygpt.params import Parameters

CHECK = settings(max_examples=8, deadline=None)

batch = st.integers(1, 3)
time = st.integers(1, 5)
width = st.integers(1, 7)


def make_params(shapes, seed=0):
    """float64 Parameters filled with N(0, 1) values (LayerNorm gains near 1)."""
    params = Parameters(shapes, dtype=np.float64)
    params.data[:] = np.random.default_rng(seed).normal(size=params.data.size)
    return params


def check(forward, backward, x, params, rng):
    """Every gradient the layer computes (input and parameters) within TOLERANCE of centred
    differences of L = sum(forward() * G); see numpygpt.gradcheck.check_layer."""
    errors = {c.name: c.error for c in check_layer(forward, backward, x, params, rng)}
    assert max(errors.values(), default=0.0) < TOLERANCE, errors


@CHECK
@given(b=batch, t=time, c_in=width, c_out=width, bias=st.booleans())
def test_linear(b, t, c_in, c_out, bias):
    """out = x W + b:  dx = dout W^T,  dW = x^T dout,  db = sum over rows of dout."""
    rng = np.random.default_rng(1)
    shapes = {"fc.weight": (c_in, c_out)} | ({"fc.bias": (c_out,)} if bias else {})
    params = make_params(shapes)
    layer = Linear(params, "fc", bias=bias)
    x = rng.normal(size=(b, t, c_in))
    check(lambda: layer.forward(x), layer.backward, x, params, rng)


@CHECK
@given(b=batch, t=time, c=st.integers(3, 9))  # at C = 2, xhat is always +-1: no gradient to check
def test_layernorm(b, t, c):
    """out = xhat w + b with xhat = (x - mean) rstd:
    dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = dout w."""
    rng = np.random.default_rng(2)
    params = make_params({"ln.weight": (c,), "ln.bias": (c,)})
    layer = LayerNorm(params, "ln")
    x = rng.normal(size=(b, t, c)) * 3 + 1
    check(lambda: layer.forward(x), layer.backward, x, params, rng)


@CHECK
@given(b=batch, t=time, c=width)
def test_gelu(b, t, c):
    """dx = dout * gelu'(x) with GPT-2's tanh approximation."""
    rng = np.random.default_rng(3)
    params = make_params({})
    layer = GELU()
    x = rng.normal(size=(b, t, c)) * 2
    check(lambda: layer.forward(x), layer.backward, x, params, rng)


@CHECK
@given(b=batch, t=time, v=st.integers(1, 6), c=width)
def test_embedding(b, t, v, c):
    """out = W[ids]: dW[v] = sum of dout rows whose id is v (ids repeat on purpose)."""
    rng = np.random.default_rng(4)
    params = make_params({"wte.weight": (v, c)})
    layer = Embedding(params, "wte")
    ids = rng.integers(0, v, size=(b, t))
    check(lambda: layer.forward(ids), layer.backward, ids, params, rng)


@CHECK
@given(b=batch, t=time, v=st.integers(1, 6), c=width)
def test_lm_head(b, t, v, c):
    """logits = x W^T: dx = dlogits W, dW = dlogits^T x."""
    rng = np.random.default_rng(5)
    params = make_params({"wte.weight": (v, c)})
    layer = LMHead(params, "wte.weight")
    x = rng.normal(size=(b, t, c))
    check(lambda: layer.forward(x), layer.backward, x, params, rng)


@CHECK
@given(b=batch, t=time, c=width, p=st.sampled_from([0.1, 0.5]))
def test_dropout_with_fixed_mask(b, t, c, p):
    """out = x * mask / (1 - p) for a fixed mask: dx = dout * mask / (1 - p)."""
    rng = np.random.default_rng(6)
    layer = Dropout(p)
    x = rng.normal(size=(b, t, c))
    # A fresh generator with the same seed on every call gives the same mask each time.
    check(lambda: layer.forward(x, np.random.default_rng(42)), layer.backward, x, make_params({}), rng)


def attention_shapes(c, heads, qkv_bias=True):
    shapes = {"attn.c_attn.weight": (c, 3 * c), "attn.c_proj.weight": (c, c), "attn.c_proj.bias": (c,)}
    if qkv_bias:
        shapes["attn.c_attn.bias"] = (3 * c,)
    return shapes


@CHECK
@given(b=batch, t=time, heads=st.integers(1, 3), head_size=st.integers(1, 3), qkv_bias=st.booleans())
def test_causal_self_attention(b, t, heads, head_size, qkv_bias):
    """Through q/k/v, the scaled scores, the causal softmax (dS = s P (dP - rowsum(dP P)))
    and the weighted sum of values, back to x and to c_attn, c_proj."""
    rng = np.random.default_rng(7)
    c = heads * head_size
    params = make_params(attention_shapes(c, heads, qkv_bias))
    params.data *= 0.5
    layer = CausalSelfAttention(params, "attn", heads, dropout=0.0, qkv_bias=qkv_bias)
    x = rng.normal(size=(b, t, c))
    check(lambda: layer.forward(x), layer.backward, x, params, rng)


@settings(max_examples=4, deadline=None)
@given(b=batch, t=st.integers(2, 5), heads=st.integers(1, 2), head_size=st.integers(1, 3))
def test_causal_self_attention_with_fixed_dropout(b, t, heads, head_size):
    """The same with attention and residual dropout on, under a fixed random mask."""
    rng = np.random.default_rng(8)
    c = heads * head_size
    params = make_params(attention_shapes(c, heads))
    layer = CausalSelfAttention(params, "attn", heads, dropout=0.3)
    x = rng.normal(size=(b, t, c))
    check(lambda: layer.forward(x, np.random.default_rng(9)), layer.backward, x, params, rng)


def mlp_shapes(prefix, c):
    return {f"{prefix}.c_fc.weight": (c, 4 * c), f"{prefix}.c_fc.bias": (4 * c,),
            f"{prefix}.c_proj.weight": (4 * c, c), f"{prefix}.c_proj.bias": (c,)}


@CHECK
@given(b=batch, t=time, c=st.integers(1, 5))
def test_mlp(b, t, c):
    """Linear -> GELU -> Linear: the chain rule in reverse order."""
    rng = np.random.default_rng(10)
    params = make_params(mlp_shapes("mlp", c))
    layer = MLP(params, "mlp", dropout=0.0)
    x = rng.normal(size=(b, t, c))
    check(lambda: layer.forward(x), layer.backward, x, params, rng)


@CHECK
@given(b=batch, t=time, heads=st.integers(1, 2), head_size=st.integers(1, 3))
def test_block(b, t, heads, head_size):
    """x + attn(ln_1(x)), then + mlp(ln_2(.)): each residual adds the identity path's gradient."""
    rng = np.random.default_rng(11)
    c = heads * head_size
    config = GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=heads, n_embd=c, dtype="float64")
    shapes = {"h.ln_1.weight": (c,), "h.ln_1.bias": (c,), "h.ln_2.weight": (c,), "h.ln_2.bias": (c,)}
    shapes |= {f"h.{k}": v for k, v in attention_shapes(c, heads).items()} | mlp_shapes("h.mlp", c)
    params = make_params(shapes)
    params.data *= 0.5
    layer = Block(params, "h", config)
    x = rng.normal(size=(b, t, c))
    check(lambda: layer.forward(x), layer.backward, x, params, rng)
