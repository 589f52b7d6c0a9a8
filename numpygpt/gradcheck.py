"""Finite-difference gradient checking: the proof that a hand-written backward is right.

For a scalar function L(x), the centred difference
    dL/dx_i  ~=  (L(x + h e_i) - L(x - h e_i)) / 2h
has error O(h^2). In float64 with h = 1e-6 that is ~1e-12 from truncation and ~1e-10 from
rounding, so an analytic gradient that is right agrees to ~1e-9 relative, and one that
drops a term is off by far more than the 1e-6 bound the tests use.

A layer's output is turned into a scalar with a fixed random projection, L = sum(out * G);
then dL/dout = G is what goes into the layer's backward.
"""
import numpy as np


def numerical_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Centred differences of the scalar f() with respect to every entry of x (changed in
    place and restored), so x may be a view into a model's parameters."""
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        original = flat[i]
        flat[i] = original + h
        plus = f()
        flat[i] = original - h
        minus = f()
        flat[i] = original
        grad.reshape(-1)[i] = (plus - minus) / (2 * h)
    return grad


def relative_error(analytic: np.ndarray, numerical: np.ndarray) -> float:
    """||a - n|| / (||a|| + ||n||): 0 when equal, 1 when unrelated; scale-free."""
    diff = np.linalg.norm(np.asarray(analytic, np.float64) - numerical)
    scale = np.linalg.norm(analytic) + np.linalg.norm(numerical)
    return float(diff / scale) if scale > 0 else 0.0
