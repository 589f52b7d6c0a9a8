"""int8 weights for generation and serving: a quarter of the bytes a decoding step reads.

Decoding one token reads every weight matrix once to multiply it by one row of activations,
so a step takes as long as reading the weights takes: GPT-2 small's 124M float32 weights are
~500 MB a token. `quantize_model` keeps the matrices of every Linear and of the LM head as int8,
one float32 scale per output channel (symmetric, round to nearest: w = round(W / s),
s = max |W[:, j]| / 127), and multiplies them with kernels.int8_matmul, which widens each int8
in registers and sums in float32. The embeddings' rows, LayerNorm's parameters and the biases
stay float32. A pass of many rows at once (a prompt's prefill, `numpygpt eval`) is compute- not
bandwidth-bound: there each matrix is widened back to float32 block by block for BLAS.

    model = quantize_model(load_model("out").model)    # then generate, serve or eval with it

The quantized model is for inference only (no backward). Its error is that of the rounding:
each weight is off by at most half its column's step, s / 2.
"""
import numpy as np

from .. import kernels
from ..formats import safetensors
from ..layers import Embedding, LayerNorm
from ..params import Parameters

DECODE_ROWS = 16  # up to this many rows take the int8 kernel; more go to BLAS
# A model whose float32 matrices fit in the CPU's cache gains nothing from reading a quarter of
# the bytes, and its matrices are small: there BLAS on the matrices widened back (the same
# rounded values) is the faster one. On 2 AMD EPYC cores the `shakespeare` preset (10 MB)
# decodes 0.84x as fast with the int8 kernel on one thread; `small` (49 MB) 2.28x.
CACHE_BYTES = 16 << 20


QUANTIZE_CHUNK = 1024  # rows at a time: the float32 temporaries stay a few MB, even for an embedding


def quantize_rows(rows) -> tuple[np.ndarray, np.ndarray]:
    """rows (C_out, C_in) float -> (int8 (C_out, C_in), scale (C_out,) float32): each row's
    values over its largest magnitude / 127, rounded to the nearest integer. The int8 rows are
    contiguous, as the kernel reads them."""
    q = np.empty(rows.shape, dtype=np.int8)
    scale = np.empty(rows.shape[0], dtype=np.float32)
    for start in range(0, rows.shape[0], QUANTIZE_CHUNK):
        chunk = np.asarray(rows[start:start + QUANTIZE_CHUNK], dtype=np.float32)
        step = np.abs(chunk).max(axis=1) / np.float32(127.0)
        step[step == 0] = 1.0  # a zero row stays zero whatever its scale
        q[start:start + QUANTIZE_CHUNK] = np.rint(chunk / step[:, None]).clip(-127, 127)
        scale[start:start + QUANTIZE_CHUNK] = step
    return q, scale


def dequantize(q, scale) -> np.ndarray:
    """The float32 rows (C_out, C_in) that int8 rows and their scales stand for."""
    return q.astype(np.float32) * scale[:, None]


class Int8Matrix:
    """x @ W for W (C_in, C_out) kept as int8 rows of W.T with a scale each. widen: keep the
    rounded matrix as float32 too, for BLAS (a model small enough to stay in cache)."""

    def __init__(self, columns_as_rows, widen: bool = False):
        self.q, self.scale = quantize_rows(columns_as_rows)
        self.widened = np.ascontiguousarray(dequantize(self.q, self.scale).T) if widen else None

    def matmul(self, x):
        """x (N, C_in) float32 -> (N, C_out) float32."""
        if self.widened is not None:
            return x @ self.widened
        if x.shape[0] > DECODE_ROWS:
            return x @ dequantize(self.q, self.scale).T
        out = np.empty((x.shape[0], self.q.shape[0]), dtype=np.float32)
        kernels.int8_matmul(self.q, self.scale, np.ascontiguousarray(x, dtype=np.float32), out)
        return out

    @property
    def nbytes(self) -> int:
        return self.q.nbytes + self.scale.nbytes


class Int8Linear:
    """A Linear (layers.Linear) whose weight is an Int8Matrix: forward only."""

    def __init__(self, matrix: "Int8Matrix", bias=None):
        self.matrix = matrix
        self.bias = None if bias is None else np.array(bias, dtype=np.float32)
        self.c_in = matrix.q.shape[1]

    def forward(self, x):
        """x: (..., C_in) -> (..., C_out)."""
        out = self.matrix.matmul(x.reshape(-1, self.c_in))
        if self.bias is not None:
            kernels.add_bias(out, self.bias)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class Int8LMHead:
    """The LM head (layers.LMHead) over an int8 copy of its (V, C) matrix: forward only."""

    def __init__(self, matrix: "Int8Matrix"):
        self.matrix = matrix

    def forward(self, x, out=None):
        logits = self.matrix.matmul(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        if out is not None:
            out[...] = logits
            return out
        return logits


def quantize_model(model, tensors=None):
    """`model` (a GPT) with int8 matrices in every Linear and in the LM head, in place, and its
    float32 matrices released: the parameters left (embeddings, LayerNorms, biases) move to a
    buffer of their own. Returns the model.

    tensors: {name: array} to take the weights from instead of the model's own parameters,
    e.g. a checkpoint's memory-mapped file: then the model can be made with init=False and
    the float32 matrices are never all in memory at once (each is read, quantized, let go)."""
    source = tensors if tensors is not None else model.params.values
    matrices = [name for name, shape in model.params.shapes.items() if len(shape) == 2 and name != "wpe.weight"]
    widen = sum(np.prod(model.params.shapes[name]) for name in matrices) * 4 <= CACHE_BYTES

    def rows(name, transpose):
        matrix = source[name]
        quantized = Int8Matrix(matrix.T if transpose else matrix, widen)
        safetensors.release(matrix)
        return quantized

    for i, block in enumerate(model.blocks):
        for part, name in (("attn", "c_attn"), ("attn", "c_proj"), ("mlp", "c_fc"), ("mlp", "c_proj")):
            prefix = f"h.{i}.{part}.{name}"
            setattr(getattr(block, part), name, Int8Linear(rows(f"{prefix}.weight", transpose=True),
                                                           source.get(f"{prefix}.bias")))
    model.lm_head = Int8LMHead(rows("wte.weight" if model.config.tie_weights else "lm_head.weight", transpose=False))
    # What stays float32, in a buffer of its own; the layers that read it are built on it again.
    kept = {name: shape for name, shape in model.params.shapes.items()
            if len(shape) == 1 or name in ("wte.weight", "wpe.weight")}
    params = Parameters(kept, dtype=model.params.dtype)
    for name in kept:
        params[name][...] = source[name]
        safetensors.release(source[name])
    model.params = params
    model.wte, model.wpe, model.ln_f = Embedding(params, "wte"), Embedding(params, "wpe"), LayerNorm(params, "ln_f")
    for i, block in enumerate(model.blocks):
        block.ln_1, block.ln_2 = LayerNorm(params, f"h.{i}.ln_1"), LayerNorm(params, f"h.{i}.ln_2")
    model.quantized = "int8"
    return model
