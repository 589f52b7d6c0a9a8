"""Finite-difference gradient checking: the proof that a hand-written backward is right.

For a scalar function L(x), the centred difference
    dL/dx_i  ~=  (L(x + h e_i) - L(x - h e_i)) / 2h
has error O(h^2). In float64 with h = 1e-6 that is ~1e-12 from truncation and ~1e-10 from
rounding, so an analytic gradient that is right agrees to ~1e-9 relative, and one that
drops a term is off by far more than TOLERANCE.

A layer's output is turned into a scalar with a fixed random projection, L = sum(out * G);
then dL/dout = G is what goes into the layer's backward.

Run it:  python -m numpygpt.gradcheck [LAYER ...] [--break LAYER]
"""
import argparse
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import kernels, layers
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
# The guided checks: one small float64 case per layer


@dataclass
class Case:
    title: str
    forward_math: str
    gradient_math: str
    shapes: dict
    checks: list = field(default_factory=list)

    @property
    def error(self) -> float:
        return max(c.error for c in self.checks)


def random_params(shapes: dict, rng, scale=1.0) -> Parameters:
    params = Parameters(shapes, dtype=np.float64)
    params.data[:] = rng.normal(size=params.data.size) * scale
    return params


def attention_shapes(prefix, c):
    return {f"{prefix}.c_attn.weight": (c, 3 * c), f"{prefix}.c_attn.bias": (3 * c,),
            f"{prefix}.c_proj.weight": (c, c), f"{prefix}.c_proj.bias": (c,)}


def mlp_shapes(prefix, c):
    return {f"{prefix}.c_fc.weight": (c, 4 * c), f"{prefix}.c_fc.bias": (4 * c,),
            f"{prefix}.c_proj.weight": (4 * c, c), f"{prefix}.c_proj.bias": (c,)}


def case_embedding(lib, rng):
    params = random_params({"wte.weight": (5, 4)}, rng)
    layer = lib.Embedding(params, "wte")
    ids = np.array([[1, 3, 1], [0, 1, 4]])  # id 1 three times: its gradient is a sum
    return Case("embedding", "out[b, t] = W[ids[b, t]]",
                "dW[v] = sum of dout[b, t] over every (b, t) with ids[b, t] == v   (scatter-add)",
                {"ids": ids.shape, "W": (5, 4)}, check_layer(lambda: layer.forward(ids), layer.backward, ids, params, rng))


def case_layernorm(lib, rng):
    params = random_params({"ln.weight": (5,), "ln.bias": (5,)}, rng)
    layer = lib.LayerNorm(params, "ln")
    x = rng.normal(size=(2, 3, 5)) * 2 + 1
    return Case("layernorm", "out = (x - mean) * rstd * w + b,  rstd = 1/sqrt(var + eps)",
                "dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = dout * w",
                {"x": x.shape, "w": (5,), "b": (5,)}, check_layer(lambda: layer.forward(x), layer.backward, x, params, rng))


def case_linear(lib, rng):
    params = random_params({"fc.weight": (4, 3), "fc.bias": (3,)}, rng)
    layer = lib.Linear(params, "fc")
    x = rng.normal(size=(2, 3, 4))
    return Case("linear", "out = x @ W + b", "dx = dout @ W.T,  dW = x.T @ dout,  db = sum_rows(dout)",
                {"x": x.shape, "W": (4, 3), "b": (3,)}, check_layer(lambda: layer.forward(x), layer.backward, x, params, rng))


def case_gelu(lib, rng):
    layer = lib.GELU()
    x = rng.normal(size=(2, 3, 4)) * 2
    return Case("gelu", "out = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)",
                "dx = dout * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx)",
                {"x": x.shape}, check_layer(lambda: layer.forward(x), layer.backward, x, random_params({}, rng), rng))


def case_attention(lib, rng):
    c, heads = 6, 2
    params = random_params(attention_shapes("attn", c), rng, scale=0.5)
    layer = lib.CausalSelfAttention(params, "attn", heads, dropout=0.0)
    x = rng.normal(size=(2, 4, c))
    return Case("attention", "P = causal_softmax(Q K^T / sqrt(D)),  Y = P V,  out = c_proj(Y)",
                "dS = P * (dP - rowsum(dP * P)) / sqrt(D),  dQ = dS K,  dK = dS^T Q,  dV = P^T dY",
                {"x": x.shape, "heads": heads, "c_attn.W": (c, 3 * c), "c_proj.W": (c, c)},
                check_layer(lambda: layer.forward(x), layer.backward, x, params, rng))


def case_mlp(lib, rng):
    c = 3
    params = random_params(mlp_shapes("mlp", c), rng, scale=0.7)
    layer = lib.MLP(params, "mlp", dropout=0.0)
    x = rng.normal(size=(2, 3, c))
    return Case("mlp", "out = c_proj(gelu(c_fc(x)))", "dx = c_fc.backward(gelu.backward(c_proj.backward(dout)))",
                {"x": x.shape, "c_fc.W": (c, 4 * c), "c_proj.W": (4 * c, c)},
                check_layer(lambda: layer.forward(x), layer.backward, x, params, rng))


def case_block(lib, rng):
    c, heads = 4, 2
    config = GPTConfig(vocab_size=8, block_size=8, n_layer=1, n_head=heads, n_embd=c, dtype="float64")
    shapes = {"h.ln_1.weight": (c,), "h.ln_1.bias": (c,), "h.ln_2.weight": (c,), "h.ln_2.bias": (c,),
              **attention_shapes("h.attn", c), **mlp_shapes("h.mlp", c)}
    params = random_params(shapes, rng, scale=0.5)
    layer = lib.Block(params, "h", config)
    x = rng.normal(size=(2, 3, c))
    return Case("block", "y = x + attn(ln_1(x)),  out = y + mlp(ln_2(y))",
                "dy = dout + ln_2.backward(mlp.backward(dout)),  dx = dy + ln_1.backward(attn.backward(dy))",
                {"x": x.shape, "parameters": len(shapes)}, check_layer(lambda: layer.forward(x), layer.backward, x, params, rng))


def case_cross_entropy(lib, rng):
    logits = rng.normal(size=(4, 7)) * 2
    targets = np.array([3, -1, 0, 6])  # -1: ignored (padding)
    criterion = lib.SoftmaxCrossEntropy(ignore_index=-1)
    loss = lambda: criterion.forward(logits.copy(), targets)  # forward overwrites its input
    loss()
    analytic = criterion.backward(1.0).copy()
    return Case("cross-entropy", "L = mean over kept rows of (logsumexp(z) - z[target])",
                "dz = (softmax(z) - onehot(target)) / n_kept,  0 on ignored rows",
                {"logits": logits.shape, "targets": targets.shape},
                [TensorCheck("dlogits", analytic, numerical_gradient(loss, logits))])


def case_model(lib, rng):
    config = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=6, dtype="float64")
    model = GPT(config, seed=1)
    model.params.data *= 5.0  # larger than GPT-2's init so every gradient is clearly measurable
    lib.patch_model(model)
    ids = rng.integers(0, config.vocab_size, size=(2, 5))
    targets = rng.integers(0, config.vocab_size, size=(2, 5))
    model.zero_grad()
    model.loss(ids, targets)
    model.backward()
    loss = lambda: model.loss(ids, targets)
    checks = [TensorCheck(f"d{name}", model.params.grads[name].copy(), numerical_gradient(loss, model.params[name]))
              for name in model.params]
    return Case("model", "L = cross_entropy(lm_head(ln_f(blocks(wte[ids] + wpe[t]))), targets),  lm_head = wte^T",
                "dwte = (embedding scatter-add of dx) + (dlogits^T @ x_f)   the tied matrix sums both uses",
                {"ids": ids.shape, "parameters": f"{model.num_parameters()} in {len(model.params)} tensors"}, checks)


def case_adamw(lib, rng):
    """Not a derivative: AdamW's update against its formula, evaluated plainly in float64."""
    p, g = rng.normal(size=8), rng.normal(size=8)
    m, v = rng.normal(size=8) * 0.1, np.abs(rng.normal(size=8)) * 0.01
    args = (0.1, 1e-2, 0.9, 0.95, 1e-8, 3)  # weight decay, lr, beta1, beta2, eps, step
    ref = [a.copy() for a in (p, g, m, v)]
    t = args[-1]
    m_ref = 0.9 * m + 0.1 * g
    v_ref = 0.95 * v + 0.05 * g * g
    expected = p - 1e-2 * ((m_ref / (1 - 0.9 ** t)) / (np.sqrt(v_ref / (1 - 0.95 ** t)) + 1e-8) + 0.1 * p)
    lib.adamw(ref[0], ref[1], ref[2], ref[3], *args)
    return Case("adamw", "m = b1 m + (1-b1) g,  v = b2 v + (1-b2) g^2",
                "p -= lr ((m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + wd p)   (update vs formula)",
                {"p": p.shape}, [TensorCheck("p_new", ref[0], expected)])


CASES = {"embedding": case_embedding, "layernorm": case_layernorm, "linear": case_linear, "gelu": case_gelu,
         "attention": case_attention, "mlp": case_mlp, "block": case_block, "cross-entropy": case_cross_entropy,
         "model": case_model, "adamw": case_adamw}


class CorrectLayers:
    """The real layers, as the namespace the cases build from."""
    Embedding, LayerNorm, Linear, GELU = layers.Embedding, layers.LayerNorm, layers.Linear, layers.GELU
    CausalSelfAttention, MLP, Block = layers.CausalSelfAttention, layers.MLP, layers.Block
    SoftmaxCrossEntropy = SoftmaxCrossEntropy
    adamw = staticmethod(kernels.adamw)

    @staticmethod
    def patch_model(model):
        pass


def broken_layers(name: str):
    """The layer set where `name`'s backward has a deliberate mistake. The broken variants live
    in tests/broken_backward.py, beside the tests, never in the real code path."""
    path = Path(__file__).resolve().parents[1] / "tests" / "broken_backward.py"
    if not path.exists():
        raise SystemExit(f"gradcheck: error: --break needs the repository's {path.relative_to(path.parents[1])}")
    spec = importlib.util.spec_from_file_location("broken_backward", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.broken(name)


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


def report(case: Case, style: Style, entries: int = 3, out=None) -> bool:
    out = out or sys.stdout
    ok = case.error < TOLERANCE
    print(style(f"== {case.title}", "1"), file=out)
    print(f"   forward : {case.forward_math}", file=out)
    print(f"   backward: {case.gradient_math}", file=out)
    print("   shapes  : " + ", ".join(f"{k} {v}" for k, v in case.shapes.items()), file=out)
    print(f"   {'entry':<28}{'analytic':>16}{'numerical':>16}", file=out)
    for check in case.checks[:4]:
        flat_a, flat_n = check.analytic.reshape(-1), check.numerical.reshape(-1)
        worst = int(np.argmax(np.abs(flat_a - flat_n)))
        picks = sorted(set(range(min(entries - 1, flat_a.size))) | {worst})
        for i in picks:
            print(f"   {format_entry(check.name, check.analytic.shape, i):<28}{flat_a[i]:>16.9f}{flat_n[i]:>16.9f}",
                  file=out)
    if len(case.checks) > 4:
        print(f"   ... and {len(case.checks) - 4} more tensors", file=out)
    worst = max(case.checks, key=lambda c: c.error)
    verdict = style("PASS", "32;1") if ok else style("FAIL", "31;1")
    print(f"   max relative error {case.error:.2e} ({worst.name})  {verdict}  (tolerance {TOLERANCE:.0e})\n", file=out)
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m numpygpt.gradcheck",
                                     description="Check every hand-written backward pass against finite "
                                                 "differences, in float64.")
    parser.add_argument("layers", nargs="*", metavar="LAYER", help=f"any of: {', '.join(CASES)} (default: all)")
    parser.add_argument("--break", dest="broken", metavar="LAYER", choices=list(CASES),
                        help="check a deliberately wrong backward of LAYER and watch the check catch it")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    unknown = [name for name in args.layers if name not in CASES]
    if unknown:
        parser.error(f"unknown layer {unknown[0]!r}; choose from {', '.join(CASES)}")
    names = args.layers or ([args.broken] if args.broken else list(CASES))
    style = Style(sys.stdout.isatty())
    failed = []
    for name in names:
        lib = broken_layers(args.broken) if args.broken == name else CorrectLayers
        if lib is not CorrectLayers:
            print(style(f"(with the deliberately broken backward of {name}: {lib.mistake})", "33"))
        if not report(CASES[name](lib, np.random.default_rng(args.seed)), style):
            failed.append(name)
    if failed:
        print(f"gradcheck: FAILED for {', '.join(failed)}: the analytic gradient disagrees with finite differences",
              file=sys.stderr)
        return 1
    print(style(f"all {len(names)} check{'s' if len(names) > 1 else ''} passed", "32"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
