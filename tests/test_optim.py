"""AdamW, the learning-rate schedule and gradient clipping."""
import math

import numpy as np
import pytest

from numpygpt.optim import AdamW, clip_grad_norm, cosine_lr
from numpygpt.params import Parameters


def make_params():
    params = Parameters({"w": (3, 4), "b": (4,)}, dtype=np.float64)
    rng = np.random.default_rng(0)
    params.data[:] = rng.normal(size=params.data.size)
    return params


def test_adamw_matches_the_formula_by_hand():
    """Two steps of AdamW, written out from the paper's formula for one scalar at a time."""
    params = make_params()
    runs = params.runs(lambda name, shape: len(shape) >= 2)
    decay = np.zeros(params.data.size, dtype=bool)
    for start, stop, decays in runs:
        decay[start:stop] = decays
    opt = AdamW(params, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, decay_runs=runs)
    rng = np.random.default_rng(1)
    p = params.data.copy()
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t in (1, 2):
        g = rng.normal(size=p.size)
        params.grad[:] = g
        opt.step()
        for i in range(p.size):
            m[i] = 0.9 * m[i] + 0.1 * g[i]
            v[i] = 0.99 * v[i] + 0.01 * g[i] ** 2
            update = (m[i] / (1 - 0.9 ** t)) / (math.sqrt(v[i] / (1 - 0.99 ** t)) + 1e-8)
            p[i] -= 0.01 * (update + (0.1 * p[i] if decay[i] else 0.0))
    np.testing.assert_allclose(params.data, p, rtol=1e-12)
    # biases were not decayed: only the matrix entries see the decay term
    assert decay[params.offsets["w"]] and not decay[params.offsets["b"]]


def test_adamw_matches_torch():
    torch = pytest.importorskip("torch")
    params = make_params()
    opt = AdamW(params, lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    ref = torch.tensor(params.data.copy(), requires_grad=True)
    ref_opt = torch.optim.AdamW([ref], lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, eps=1e-8)
    rng = np.random.default_rng(2)
    for _ in range(5):
        g = rng.normal(size=params.data.size)
        params.grad[:] = g
        opt.step()
        ref.grad = torch.tensor(g)
        ref_opt.step()
    np.testing.assert_allclose(params.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_adamw_state_round_trip_is_exact():
    params = make_params()
    opt = AdamW(params, lr=1e-2)
    params.grad[:] = 1.0
    opt.step()
    saved_params, saved_state = params.data.copy(), opt.state_dict()
    params.grad[:] = 0.5
    opt.step()
    after = params.data.copy()
    params.data[:] = saved_params
    fresh = AdamW(params, lr=1e-2)
    fresh.load_state_dict(saved_state)
    fresh.step()
    np.testing.assert_array_equal(params.data, after)


def test_cosine_schedule():
    lr = lambda s: cosine_lr(s, max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    assert lr(0) == pytest.approx(0.1) and lr(9) == pytest.approx(1.0)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)
    assert lr(110) == pytest.approx(0.1) and lr(500) == pytest.approx(0.1)
    assert all(lr(s) >= lr(s + 1) for s in range(10, 120))


def test_clip_grad_norm():
    g = np.array([3.0, 4.0])
    assert clip_grad_norm(g, 10.0) == pytest.approx(5.0)
    np.testing.assert_array_equal(g, [3.0, 4.0])
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    assert np.linalg.norm(g) == pytest.approx(1.0, rel=1e-5)
