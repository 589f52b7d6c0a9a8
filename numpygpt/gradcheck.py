"""Finite-difference gradient checking: the proof that a hand-written backward is right.

For a scalar function L(x), the centred difference
    dL/dx_i  ~=  (L(x + h e_i) - L(x - h e_i)) / 2h
has error O(h^2). In float64 with h = 1e-6 that is ~1e-12 from truncation and ~1e-10 from
rounding, so an analytic gradient that is right agrees to ~1e-9 relative, and one that
drops a term is off by far more than TOLERANCE.

A layer's output is turned into a scalar with a fixed random projection, L = sum(out * G);
then dL/dout = G is what goes into the layer's backward.

Every check is a `Case` in CASES: the layer's math, the shapes of a small example, and how to
build it. `numpygpt gradcheck [LAYER ...] [--break LAYER]` runs them on those shapes and
explains each; tests/test_layers_gradcheck.py runs the same cases on shapes hypothesis draws.
A case builds its layer from a namespace (`CorrectLayers`, or the one `broken(name)` returns,
where one backward has the classic mistake of numpygpt.mistakes), so the check that passes on
the real layer is the same code that catches the mistake.
"""
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from . import kernels, layers, mistakes
from .config import GPTConfig
from .loss import SoftmaxCrossEntropy
from .model import GPT
from .params import Parameters

TOLERANCE = 1e-6


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


@dataclass
class TensorCheck:
    """The analytic and numerical gradient of one tensor, side by side."""
    name: str
    analytic: np.ndarray
    numerical: np.ndarray

    @property
    def error(self) -> float:
        return relative_error(self.analytic, self.numerical)


def check_layer(forward, backward, x, params: Parameters, rng: np.random.Generator) -> list[TensorCheck]:
    """Analytic vs numerical gradients of L = sum(forward() * G) for a fixed random G: for the
    input x (when it is a float array, i.e. not token ids) and for every parameter.
    forward() computes the layer on x; backward(G) returns dL/dx and += the parameter grads."""
    g = rng.normal(size=forward().shape)
    params.zero_grad()
    forward()
    dx = backward(g)
    analytic = {name: params.grads[name].copy() for name in params}
    loss = lambda: float(np.sum(forward() * g))
    checks = [TensorCheck(f"d{name}", analytic[name], numerical_gradient(loss, params[name])) for name in params]
    if dx is not None and np.issubdtype(np.asarray(x).dtype, np.floating):
        checks.insert(0, TensorCheck("dx", dx, numerical_gradient(loss, x)))
    return checks


# ---------------------------------------------------------------------------------------------
# The cases: one per layer, each a small float64 example


def random_params(shapes: dict, rng, scale=1.0) -> Parameters:
    params = Parameters(shapes, dtype=np.float64)
    params.data[:] = rng.normal(size=params.data.size) * scale
    return params


@dataclass(frozen=True)
class Case:
    """One gradient check. run(lib, rng, **dims) -> (shapes shown, [TensorCheck]); `dims` are
    the example's sizes (the guided check's; the tests draw others of the same names)."""
    name: str
    forward_math: str
    gradient_math: str
    dims: dict
    run: Callable


@dataclass
class Result:
    case: Case
    shapes: dict
    checks: list = field(default_factory=list)

    @property
    def error(self) -> float:
        return max(c.error for c in self.checks)


def run_case(case: Case, lib=None, seed: int = 0, **dims) -> Result:
    """Check `case` on its own dims (or those given) with the real layers (or `lib`)."""
    shapes, checks = case.run(lib or CorrectLayers, np.random.default_rng(seed), **{**case.dims, **dims})
    return Result(case, shapes, checks)


def check_embedding(lib, rng, b, t, v, c):
    params = random_params(lib.Embedding.shapes("wte", v, c), rng)
    layer = lib.Embedding(params, "wte")
    ids = rng.integers(0, v, size=(b, t))
    return {"ids": ids.shape, "W": (v, c)}, check_layer(lambda: layer.forward(ids), layer.backward, ids, params, rng)


def check_layernorm(lib, rng, b, t, c):
    params = random_params(lib.LayerNorm.shapes("ln", c), rng)
    layer = lib.LayerNorm(params, "ln")
    x = rng.normal(size=(b, t, c)) * 2 + 1
    return {"x": x.shape, "w": (c,), "b": (c,)}, check_layer(lambda: layer.forward(x), layer.backward, x, params, rng)


def check_linear(lib, rng, b, t, c_in, c_out, bias):
    params = random_params(lib.Linear.shapes("fc", c_in, c_out, bias), rng)
    layer = lib.Linear(params, "fc", bias=bias)
    x = rng.normal(size=(b, t, c_in))
    return ({"x": x.shape, "W": (c_in, c_out), "b": (c_out,) if bias else None},
            check_layer(lambda: layer.forward(x), layer.backward, x, params, rng))


def check_gelu(lib, rng, b, t, c):
    layer = lib.GELU()
    x = rng.normal(size=(b, t, c)) * 2
    return {"x": x.shape}, check_layer(lambda: layer.forward(x), layer.backward, x, random_params({}, rng), rng)


def check_dropout(lib, rng, b, t, c, p):
    layer = lib.Dropout(p)
    x = rng.normal(size=(b, t, c))
    # A fresh generator with the same seed on every call gives the same mask each time.
    return ({"x": x.shape, "p": p},
            check_layer(lambda: layer.forward(x, np.random.default_rng(42)), layer.backward, x, random_params({}, rng),
                        rng))


def check_attention(lib, rng, b, t, heads, head_size, qkv_bias, dropout, tile):
    c = heads * head_size
    params = random_params(lib.CausalSelfAttention.shapes("attn", c, qkv_bias), rng, scale=0.5)
    layer = lib.CausalSelfAttention(params, "attn", heads, dropout=dropout, qkv_bias=qkv_bias)
    layer.tile = tile  # query rows per tile: t > tile checks the tiled products too
    x = rng.normal(size=(b, t, c))
    # With dropout, a generator of the same seed on every call keeps the masks fixed.
    forward = (lambda: layer.forward(x, np.random.default_rng(9))) if dropout else (lambda: layer.forward(x))
    return ({"x": x.shape, "heads": heads, "c_attn.W": (c, 3 * c), "c_proj.W": (c, c)},
            check_layer(forward, layer.backward, x, params, rng))


def check_mlp(lib, rng, b, t, c):
    params = random_params(lib.MLP.shapes("mlp", c), rng, scale=0.7)
    layer = lib.MLP(params, "mlp", dropout=0.0)
    x = rng.normal(size=(b, t, c))
    return ({"x": x.shape, "c_fc.W": (c, 4 * c), "c_proj.W": (4 * c, c)},
            check_layer(lambda: layer.forward(x), layer.backward, x, params, rng))


def check_block(lib, rng, b, t, heads, head_size):
    c = heads * head_size
    config = GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=heads, n_embd=c, dtype="float64")
    shapes = lib.Block.shapes("h", config)
    params = random_params(shapes, rng, scale=0.5)
    layer = lib.Block(params, "h", config)
    x = rng.normal(size=(b, t, c))
    return ({"x": x.shape, "parameters": len(shapes)},
            check_layer(lambda: layer.forward(x), layer.backward, x, params, rng))


def check_lm_head(lib, rng, b, t, v, c):
    params = random_params(lib.Embedding.shapes("wte", v, c), rng)
    layer = lib.LMHead(params, "wte.weight")
    x = rng.normal(size=(b, t, c))
    return {"x": x.shape, "W": (v, c)}, check_layer(lambda: layer.forward(x), layer.backward, x, params, rng)


def check_cross_entropy(lib, rng, n, v):
    logits = rng.normal(size=(n, v)) * 2
    targets = rng.integers(0, v, size=n)
    targets[rng.random(n) < 0.25] = -1  # ignored rows (padding)
    criterion = lib.SoftmaxCrossEntropy(ignore_index=-1)
    loss = lambda: criterion.forward(logits.copy(), targets)  # forward overwrites its input
    loss()
    analytic = criterion.backward(1.0).copy()
    return ({"logits": logits.shape, "targets": targets.shape},
            [TensorCheck("dlogits", analytic, numerical_gradient(loss, logits))])


def check_model(lib, rng, b, t, v, n_layer, heads, head_size):
    config = GPTConfig(vocab_size=v, block_size=t + 1, n_layer=n_layer, n_head=heads, n_embd=heads * head_size,
                       dtype="float64")
    model = GPT(config, seed=1)
    model.params.data *= 5.0  # larger than GPT-2's init so every gradient is clearly measurable
    lib.patch_model(model)
    ids = rng.integers(0, v, size=(b, t))
    targets = rng.integers(0, v, size=(b, t))
    model.zero_grad()
    model.loss(ids, targets)
    model.backward()
    loss = lambda: model.loss(ids, targets)
    checks = [TensorCheck(f"d{name}", model.params.grads[name].copy(), numerical_gradient(loss, model.params[name]))
              for name in model.params]
    return {"ids": ids.shape, "parameters": f"{model.num_parameters()} in {len(model.params)} tensors"}, checks


def check_adamw(lib, rng, n):
    """Not a derivative: AdamW's update against its formula, evaluated plainly in float64."""
    p, g = rng.normal(size=n), rng.normal(size=n)
    m, v = rng.normal(size=n) * 0.1, np.abs(rng.normal(size=n)) * 0.01
    wd, lr, b1, b2, eps, t = 0.1, 1e-2, 0.9, 0.95, 1e-8, 3
    updated = p.copy()
    m_new, v_new = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
    expected = p - lr * ((m_new / (1 - b1 ** t)) / (np.sqrt(v_new / (1 - b2 ** t)) + eps) + wd * p)
    lib.adamw(updated, g.copy(), m.copy(), v.copy(), wd, lr, b1, b2, eps, t)
    return {"p": p.shape}, [TensorCheck("p_new", updated, expected)]


CASES = {case.name: case for case in [
    Case("embedding", "out[b, t] = W[ids[b, t]]",
         "dW[v] = sum of dout[b, t] over every (b, t) with ids[b, t] == v   (scatter-add)",
         dict(b=2, t=3, v=5, c=4), check_embedding),
    Case("layernorm", "out = (x - mean) * rstd * w + b,  rstd = 1/sqrt(var + eps)",
         "dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dout * w",
         dict(b=2, t=3, c=5), check_layernorm),
    Case("linear", "out = x @ W + b", "dx = dout @ W.T,  dW = x.T @ dout,  db = sum_rows(dout)",
         dict(b=2, t=3, c_in=4, c_out=3, bias=True), check_linear),
    Case("gelu", "out = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)",
         "dx = dout * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx)", dict(b=2, t=3, c=4), check_gelu),
    Case("dropout", "out = x * mask / (1 - p),  mask[i] = 1 with probability 1 - p",
         "dx = dout * mask / (1 - p)   (the same mask, made again from its seed)",
         dict(b=2, t=3, c=4, p=0.5), check_dropout),
    Case("attention", "P = causal_softmax(Q K^T / sqrt(D)),  Y = P V,  out = c_proj(Y)",
         "dS = P * (dP - rowsum(dP * P)) / sqrt(D),  dQ = dS K,  dK = dS^T Q,  dV = P^T dY",
         dict(b=2, t=4, heads=2, head_size=3, qkv_bias=True, dropout=0.0, tile=2), check_attention),
    Case("mlp", "out = c_proj(gelu(c_fc(x)))", "dx = c_fc.backward(gelu.backward(c_proj.backward(dout)))",
         dict(b=2, t=3, c=3), check_mlp),
    Case("block", "y = x + attn(ln_1(x)),  out = y + mlp(ln_2(y))",
         "dy = dout + ln_2.backward(mlp.backward(dout)),  dx = dy + ln_1.backward(attn.backward(dy))",
         dict(b=2, t=3, heads=2, head_size=2), check_block),
    Case("lm-head", "logits = x @ W^T   (W: the token embedding, tied)",
         "dx = dlogits @ W,  dW += dlogits^T @ x", dict(b=2, t=3, v=5, c=4), check_lm_head),
    Case("cross-entropy", "L = mean over kept rows of (logsumexp(z) - z[target])",
         "dz = (softmax(z) - onehot(target)) / n_kept,  0 on ignored rows", dict(n=4, v=7), check_cross_entropy),
    Case("model", "L = cross_entropy(lm_head(ln_f(blocks(wte[ids] + wpe[t]))), targets),  lm_head = wte^T",
         "dwte = (embedding scatter-add of dx) + (dlogits^T @ x_f)   the tied matrix sums both uses",
         dict(b=2, t=5, v=11, n_layer=2, heads=2, head_size=3), check_model),
    Case("adamw", "m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2",
         "p -= lr ((m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd p)   (update vs formula)",
         dict(n=8), check_adamw),
]}


class CorrectLayers:
    """The real layers, as the namespace the cases build from."""
    Embedding, LayerNorm, Linear, GELU, Dropout = layers.Embedding, layers.LayerNorm, layers.Linear, layers.GELU, \
        layers.Dropout
    CausalSelfAttention, MLP, Block, LMHead = layers.CausalSelfAttention, layers.MLP, layers.Block, layers.LMHead
    SoftmaxCrossEntropy = SoftmaxCrossEntropy
    adamw = staticmethod(kernels.adamw)
    mistake = None

    @staticmethod
    def patch_model(model):
        pass


def broken(name: str):
    """CorrectLayers with `name`'s backward replaced by its broken variant (numpygpt.mistakes)."""
    if name == "model":
        class Broken(CorrectLayers):
            mistake = mistakes.MODEL_MISTAKE

            @staticmethod
            def patch_model(model):
                model.lm_head = mistakes.LMHeadForgettingTiedUse(model.params, "wte.weight")
        return Broken
    attribute, replacement, mistake = mistakes.BREAKS[name]
    return type("Broken", (CorrectLayers,), {attribute: replacement, "mistake": mistake})


# ---------------------------------------------------------------------------------------------
# Printing


class Style:
    def __init__(self, colour: bool):
        self.colour = colour

    def __call__(self, text, code):
        return f"\033[{code}m{text}\033[0m" if self.colour else text


def format_entry(name: str, shape: tuple, flat_index: int) -> str:
    index = np.unravel_index(flat_index, shape) if shape else ()
    return f"{name}[{','.join(map(str, index))}]"


def report(result: Result, style: Style, entries: int = 3, out=None) -> bool:
    out = out or sys.stdout
    ok = result.error < TOLERANCE
    print(style(f"== {result.case.name}", "1"), file=out)
    print(f"   forward : {result.case.forward_math}", file=out)
    print(f"   backward: {result.case.gradient_math}", file=out)
    print("   shapes  : " + ", ".join(f"{k} {v}" for k, v in result.shapes.items() if v is not None), file=out)
    print(f"   {'entry':<28}{'analytic':>16}{'numerical':>16}", file=out)
    for check in result.checks[:4]:
        flat_a, flat_n = check.analytic.reshape(-1), check.numerical.reshape(-1)
        worst = int(np.argmax(np.abs(flat_a - flat_n)))
        picks = sorted(set(range(min(entries - 1, flat_a.size))) | {worst})
        for i in picks:
            print(f"   {format_entry(check.name, check.analytic.shape, i):<28}{flat_a[i]:>16.9f}{flat_n[i]:>16.9f}",
                  file=out)
    if len(result.checks) > 4:
        print(f"   ... and {len(result.checks) - 4} more tensors", file=out)
    worst = max(result.checks, key=lambda c: c.error)
    verdict = style("PASS", "32;1") if ok else style("FAIL", "31;1")
    print(f"   max relative error {result.error:.2e} ({worst.name})  {verdict}  (tolerance {TOLERANCE:.0e})\n", file=out)
    return ok


if __name__ == "__main__":
    sys.exit("python -m numpygpt.gradcheck: the guided check is `numpygpt gradcheck [LAYER ...]` "
             "(or python -m numpygpt gradcheck ...)")
