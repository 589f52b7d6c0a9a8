"""All parameters in one flat buffer, and all gradients in another.

Each tensor is a named view into the flat buffer, named as in GPT-2 (`h.0.attn.c_attn.weight`).
The optimizer, gradient clipping, checkpoints and an all-reduce then work on one contiguous
array instead of a list of a hundred small ones, and zeroing the gradients is one fill.
"""
import numpy as np

ALIGN = 16  # elements; each tensor starts on a 64-byte boundary (float32) for SIMD loads


class Parameters:
    """Flat parameter and gradient storage.

    shapes: {name: shape} in a fixed order (the order of the flat buffer).
    data, grad: (P,) arrays of `dtype`; `self[name]` and `self.grads[name]` are views.
    shared_data: another Parameters' `data` to use as this one's values (a replica that reads
    the same weights and keeps gradients of its own); None allocates zeros.
    """

    def __init__(self, shapes: dict, dtype=np.float32, shared_data=None):
        self.dtype = np.dtype(dtype)
        self.shapes = {name: tuple(shape) for name, shape in shapes.items()}
        self.offsets = {}
        offset = 0
        for name, shape in self.shapes.items():
            self.offsets[name] = offset
            size = int(np.prod(shape, dtype=np.int64))
            offset += -(-size // ALIGN) * ALIGN
        if shared_data is not None and (shared_data.shape != (offset,) or shared_data.dtype != self.dtype):
            raise ValueError(f"shared data must be ({offset},) {self.dtype}, "
                             f"got {shared_data.shape} {shared_data.dtype}")
        self.data = np.zeros(offset, dtype=self.dtype) if shared_data is None else shared_data
        self.grad = np.zeros(offset, dtype=self.dtype)
        self.values = {name: self._view(self.data, name) for name in self.shapes}
        self.grads = {name: self._view(self.grad, name) for name in self.shapes}

    def _view(self, flat, name):
        start = self.offsets[name]
        size = int(np.prod(self.shapes[name], dtype=np.int64))
        return flat[start:start + size].reshape(self.shapes[name])

    def __getitem__(self, name):
        return self.values[name]

    def __iter__(self):
        return iter(self.shapes)

    def __len__(self):
        return len(self.shapes)

    @property
    def count(self) -> int:
        """Number of real parameters (alignment padding not counted)."""
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes.values())

    def zero_grad(self):
        self.grad.fill(0)

    def runs(self, predicate) -> list:
        """[(start, stop, flag)]: the flat buffer cut into the fewest contiguous runs where
        flag = predicate(name, shape) is the same for every tensor in the run. Alignment
        padding goes with the tensor before it. (A per-entry mask would cost a byte per
        parameter: 124 MB for GPT-2 small.)"""
        runs = []
        names = list(self.shapes)
        for i, name in enumerate(names):
            start = self.offsets[name]
            stop = self.offsets[names[i + 1]] if i + 1 < len(names) else self.data.size
            flag = bool(predicate(name, self.shapes[name]))
            if runs and runs[-1][2] == flag:
                runs[-1] = (runs[-1][0], stop, flag)
            else:
                runs.append((start, stop, flag))
        return runs

    def state_dict(self) -> dict:
        """{name: array copy}, for checkpoints."""
        return {name: view.copy() for name, view in self.values.items()}

    def load_state_dict(self, tensors: dict):
        missing = set(self.shapes) - set(tensors)
        if missing:
            raise ValueError(f"missing parameters: {', '.join(sorted(missing))}")
        unexpected = set(tensors) - set(self.shapes)
        if unexpected:
            raise ValueError(f"unexpected parameters: {', '.join(sorted(unexpected))}")
        for name, array in tensors.items():
            if tuple(array.shape) != self.shapes[name]:
                raise ValueError(f"parameter {name} has shape {tuple(array.shape)}, "
                                 f"the model expects {self.shapes[name]}")
            self.values[name][...] = array
