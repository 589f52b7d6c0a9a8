"""Data parallel across the cores of one process: the batch's rows cut into one shard per core,
each shard's loss and backward run by a thread of its own, on one core, and their gradients
summed into the model's.

Why not let every matmul and kernel use all the cores, as the model does by itself? Then each
of a step's ~100 matmuls and ~60 kernels splits its work over the cores and waits at its end for
the slowest of them; on small matrices those waits are a large part of the call (OpenBLAS's
threads wait on each other for 13% of a dW product's time and 70% of attention's small products
on the `small` preset, AVX2 host). Shards give each core a whole model's worth of work with no
meeting point until the step's end, as data parallel ranks do (benchmarks/README.md measures
both).

The result is that of one process on the whole batch, to float rounding: the shards' losses
are weighted by their counted rows, and each shard's dropout masks are its rows of the masks
one process would draw (training.dist.RankRows), from copies of the same generator.
"""
import contextlib
import copy
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

from .. import kernels
from ..model import GPT
from .dist import RankRows

# Above this many parameters a second gradient buffer costs more than the shards save: GPT-2
# small (124M) on 2 shards was within the host's spread of one model (3.9-4.3 against 4.2-4.4 s
# a step) and would need 497 MB more, past PyTorch's peak memory for the same step.
MAX_PARAMETERS = 50_000_000


def blas_threads():
    """The BLAS library's thread pool as threadpoolctl sees it, or None when it cannot set that
    library's thread count (shards would then each run a BLAS on every core)."""
    blas = ThreadpoolController().select(user_api="blas")
    return blas if blas.lib_controllers else None


def shard_count(model: GPT, batch_size: int) -> int:
    """How many shards to cut batches of `batch_size` rows into: one per BLAS thread (the
    process's cores, or its share of them under mpiexec), fewer if they do not divide the batch,
    and 1 (no shards) for models over MAX_PARAMETERS or a BLAS whose threads cannot be set."""
    blas = blas_threads()
    if blas is None or model.num_parameters() > MAX_PARAMETERS:
        return 1
    threads = max(controller.num_threads for controller in blas.lib_controllers)
    return max(d for d in range(1, min(threads, batch_size) + 1) if batch_size % d == 0)


class ThreadShards:
    """`loss` and `backward` with GPT's meaning (the mean over the batch, gradients accumulated
    into model.params.grads), run as `shards` threads over equal shares of the rows.

    Shard 0 runs on `model` itself; the others on replicas (GPT.replica: the same weights, their
    own gradients and activations), whose gradients are added into the model's after backward.
    While shards run, BLAS is held to one thread and the kernels run on their calling thread.
    """

    def __init__(self, model: GPT, shards: int):
        if shards < 2:
            raise ValueError(f"ThreadShards needs 2 or more shards, got {shards}")
        self.model = model
        self.models = [model] + [model.replica() for _ in range(shards - 1)]
        self.blas = blas_threads()
        self.pool = ThreadPoolExecutor(shards, thread_name_prefix="shard",
                                       initializer=kernels.run_on_calling_thread_only)
        self.weights = None

    @property
    def shards(self) -> int:
        return len(self.models)

    def _run(self, work, items):
        """work(item) for every item on the shard threads, BLAS on one thread each, under the
        caller's np.errstate (NumPy keeps it per thread)."""
        errors = np.geterr()

        def call(item):
            with np.errstate(**errors):
                return work(item)
        with self.blas.limit(limits=1) if self.blas else contextlib.nullcontext():
            return list(self.pool.map(call, items))

    def _shard_rngs(self, rng):
        """Shard k's dropout generator: a copy of the one generator, numbered as rows
        k*B/shards.. of the batch (within this rank's rows, under mpiexec). Shard 0 draws from
        the generator itself, so it advances as it would in one process."""
        if rng is None:
            return [None] * self.shards
        rank, generator = (rng.rank, rng.rng) if isinstance(rng, RankRows) else (0, rng)
        generators = [generator] + [copy.deepcopy(generator) for _ in range(self.shards - 1)]
        return [RankRows(g, rank * self.shards + k) for k, g in enumerate(generators)]

    def loss(self, ids, targets, rng=None) -> float:
        """GPT.loss over ids, targets (B, T), B a multiple of `shards`."""
        ids, targets = np.asarray(ids), np.asarray(targets)
        b = ids.shape[0]
        if b % self.shards:
            raise ValueError(f"a batch of {b} rows does not split into {self.shards} equal shards")
        n = b // self.shards
        rngs = self._shard_rngs(rng)

        def shard_loss(k):
            return self.models[k].loss(ids[k * n:(k + 1) * n], targets[k * n:(k + 1) * n], rngs[k])
        losses = self._run(shard_loss, range(self.shards))
        # Each shard's loss is the mean over its counted rows (targets of -1 are not counted).
        kept = np.array([m.criterion.n_kept for m in self.models], dtype=np.float64)
        self.weights = kept / max(kept.sum(), 1.0)
        return float(np.dot(self.weights, losses))

    def backward(self, dloss: float = 1.0):
        """GPT.backward for the last `loss`: the shards' gradients, added into the model's."""
        weights, self.weights = self.weights, None

        def shard_backward(k):
            if k > 0:
                self.models[k].zero_grad()
            self.models[k].backward(dloss * weights[k])
        self._run(shard_backward, range(self.shards))
        total = self.model.params.grad
        bounds = np.linspace(0, total.size, self.shards + 1).astype(int)

        def add_replicas(k):  # each thread sums one stretch of the flat buffers
            part = slice(bounds[k], bounds[k + 1])
            for replica in self.models[1:]:
                np.add(total[part], replica.params.grad[part], out=total[part])
        self._run(add_replicas, range(self.shards))

    def close(self):
        self.pool.shutdown()
