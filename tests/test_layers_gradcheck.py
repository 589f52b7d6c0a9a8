"""Finite-difference checks for every layer's backward pass, in float64, on shapes hypothesis
draws.

These are the cases `numpygpt gradcheck` explains (numpygpt.gradcheck.CASES), each run on its
own sizes there and here on drawn ones (T = 1, odd widths, one head or three, with and without
biases): the layer's output is turned into the scalar L = sum(out * G) for a fixed random G, and
the layer's analytic gradients (backward(G)) for the input and every parameter are compared
with centred differences of L. A missing term in any backward makes the relative error jump
far above TOLERANCE.
"""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numpygpt.gradcheck import CASES, TOLERANCE, run_case

# What each size a case names may be drawn from.
SIZES = {
    "b": st.integers(1, 3), "t": st.integers(1, 5), "c": st.integers(1, 7), "c_in": st.integers(1, 7),
    "c_out": st.integers(1, 7), "v": st.integers(1, 6), "heads": st.integers(1, 3), "head_size": st.integers(1, 3),
    "n": st.integers(1, 6), "n_layer": st.integers(1, 2), "bias": st.booleans(), "qkv_bias": st.booleans(),
    "p": st.sampled_from([0.1, 0.5]), "dropout": st.sampled_from([0.0, 0.3]),
    "tile": st.integers(1, 6),
}
# Where a case needs narrower sizes than SIZES gives, and why.
NARROWER = {
    "layernorm": {"c": st.integers(3, 9)},  # at C = 2, xhat is always +-1: no gradient to check
    # Every parameter is a check, so few and small; a width of 2 or less makes LayerNorm's
    # gradients vanish (xhat = +-1) below what finite differences resolve.
    "model": {"t": st.integers(1, 4), "v": st.integers(2, 9), "heads": st.just(2), "head_size": st.integers(2, 3)},
    "block": {"heads": st.integers(1, 2)},
}


@pytest.mark.parametrize("name", list(CASES))
def test_backward_equals_finite_differences(name):
    case = CASES[name]
    sizes = st.fixed_dictionaries({k: NARROWER.get(name, {}).get(k, SIZES[k]) for k in case.dims})

    @settings(max_examples=4 if name == "model" else 8, deadline=None)
    @given(dims=sizes, seed=st.integers(0, 2 ** 16))
    def check(dims, seed):
        result = run_case(case, seed=seed, **dims)
        assert result.error < TOLERANCE, {c.name: c.error for c in result.checks}

    check()


@settings(max_examples=30, deadline=None)
@given(b=st.integers(1, 3), t=st.integers(1, 12), heads=st.integers(1, 3), head_size=st.integers(1, 4),
       tile=st.integers(1, 13), dropout=st.sampled_from([0.0, 0.3]), seed=st.integers(0, 2 ** 16))
def test_attention_tiles_equal_the_whole_square(b, t, heads, head_size, tile, dropout, seed):
    """Attention cut into tiles of query rows gives the output and every gradient of the
    whole-square computation (tile >= T), dropout masks included, to float64 rounding."""
    import numpy as np

    from numpygpt import layers
    from numpygpt.gradcheck import random_params
    c = heads * head_size
    results = []
    for layer_tile in (tile, t):
        rng = np.random.default_rng(seed)
        params = random_params(layers.CausalSelfAttention.shapes("attn", c), rng, scale=0.5)
        layer = layers.CausalSelfAttention(params, "attn", heads, dropout=dropout)
        layer.tile = layer_tile
        x, dout = rng.normal(size=(b, t, c)), rng.normal(size=(b, t, c))
        out = layer.forward(x, np.random.default_rng(seed) if dropout else None)
        results.append((out, layer.backward(dout), params.grad.copy()))
    for tiled, whole in zip(*results):
        np.testing.assert_allclose(tiled, whole, rtol=1e-12, atol=1e-12)
