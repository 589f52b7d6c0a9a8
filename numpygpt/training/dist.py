"""Data-parallel training over MPI (mpi4py), with optional ZeRO stage 1.

`mpiexec -n N numpygpt train ...` starts N ranks. Every rank holds the whole model. Each
step every rank draws the same global batch of N*B windows (the same data generator on every
rank) and keeps its B rows; dropout masks are the rows of the global batch's masks. After the
backward pass the gradients, already scaled by 1/N, are summed across ranks by ONE
`Allreduce` over the flat gradient buffer (`Parameters.grad`: every tensor's gradient is a
view into it). Every rank then takes the same AdamW step, so the weights stay bit-identical,
and N ranks with B rows each compute what one process computes with N*B rows.

ZeRO stage 1 (`--zero`) splits AdamW's moments, twice the model's size, across the ranks:
`Reduce_scatter` hands each rank the summed gradient of its shard of the flat buffer only,
each rank updates its shard, and `Allgatherv` puts the updated shards together on every rank.
Optimizer memory per rank falls as 1/N; the bytes moved per step are those of one allreduce
(a reduce-scatter plus an allgather).

One process (no mpiexec, or -n 1) uses `Communicator`, whose collectives do nothing, so the
trainer has one code path and a plain run is exactly what it was before MPI.
"""
import hashlib
import os
import sys
import threading
import time
import traceback
from contextlib import contextmanager

import numpy as np

from .. import kernels
from ..errors import DistError, UserError
from ..optim import AdamW, clip_grad_norm
from ..params import ALIGN

# What launchers tell their processes: MPICH's hydra (and Slurm's PMI) and Open MPI.
LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
ABORT_GRACE_S = 1.0


class PeerFailed(UserError):
    """Raised on every rank when some rank failed in a `fail_together` block: str(e) is that
    rank's error ("rank 1: ..." when not every rank failed alike)."""


def launched_size() -> int:
    """How many processes the launcher started (1 when not launched by mpiexec)."""
    for name in LAUNCHER_SIZE_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def world(timeout: float | None = None, prog: str = "numpygpt train") -> "Communicator":
    """The communicator of this run: MPI's world under mpiexec -n N > 1, else one process.
    timeout: seconds a collective may wait (see MPICommunicator)."""
    size = launched_size()
    if size == 1:
        return Communicator()
    try:
        from mpi4py import MPI
    except ImportError:
        raise DistError(f"launched on {size} ranks by mpiexec, but mpi4py is not installed: "
                        "pip install '.[mpi]'") from None
    comm = MPICommunicator(MPI.COMM_WORLD, timeout, prog)
    if comm.size != size:
        raise DistError(f"mpiexec started {size} processes but MPI sees {comm.size}: this mpiexec does not "
                        f"belong to the MPI library mpi4py uses ({MPI.Get_library_version().splitlines()[0]})")
    return comm


def shard_bounds(n: int, size: int, align: int = ALIGN) -> list[int]:
    """Boundaries [b0=0, b1, ..., b_size=n] cutting a flat buffer of n entries into `size`
    near-equal shards that start on multiples of `align` (the padding goes into the shard
    boundaries, not into the tensors). Shard r is [b_r, b_{r+1}); late shards may be empty
    when n is small."""
    return [min(n, -(-(n * r // size) // align) * align) for r in range(size)] + [n]


def fingerprint(array: np.ndarray) -> str:
    """A short hash of an array's bytes: equal on two ranks iff the arrays (almost surely) are."""
    return hashlib.blake2b(np.ascontiguousarray(array).view(np.uint8), digest_size=16).hexdigest()


class Communicator:
    """One process: rank 0 of 1. Every collective is the identity; `MPICommunicator` is the
    real one. Sums are in place on float arrays and return Python floats for scalars."""

    rank = 0
    size = 1
    local_rank = 0  # among the ranks on this host

    def allreduce_sum(self, buffer: np.ndarray):
        """buffer (any shape) <- its sum over ranks, in place."""

    def reduce_scatter_sum(self, buffer: np.ndarray, bounds: list[int]) -> np.ndarray:
        """The sum over ranks of this rank's shard buffer[bounds[rank]:bounds[rank + 1]],
        written over the start of buffer (MPI's in-place reduce-scatter: no extra memory);
        returns that view. The rest of buffer is left as it was."""
        start, stop = bounds[self.rank], bounds[self.rank + 1]
        buffer[:stop - start] = buffer[start:stop]
        return buffer[:stop - start]

    def allgather_shards(self, buffer: np.ndarray, bounds: list[int]):
        """buffer[bounds[r]:bounds[r + 1]] <- rank r's, for every r, in place."""

    def gather_shards(self, shard: np.ndarray, bounds: list[int]) -> np.ndarray | None:
        """The shards of all ranks put together on rank 0 (bounds[-1] entries); None elsewhere."""
        return shard.copy()

    def allgather(self, value) -> list:
        """[value of rank 0, value of rank 1, ...] on every rank (small Python values)."""
        return [value]

    def sum(self, value: float) -> float:
        return float(sum(self.allgather(float(value))))

    def mean(self, value: float) -> float:
        return self.sum(value) / self.size

    def any(self, flag: bool) -> bool:
        return any(self.allgather(bool(flag)))

    def local_rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch of size * batch_size."""
        return slice(self.rank * batch_size, (self.rank + 1) * batch_size)

    def dropout_rng(self, rng: np.random.Generator):
        """The generator to hand the model for dropout: its masks are this rank's rows of the
        masks one process would draw for the global batch."""
        return rng if self.size == 1 else RankRows(rng, self.rank)

    def check_same(self, array: np.ndarray, what: str):
        """Raise DistError on every rank unless `array` is bit-identical on all ranks."""
        if self.size == 1:
            return
        digests = self.allgather(fingerprint(array))
        if len(set(digests)) > 1:
            differ = [r for r, d in enumerate(digests) if d != digests[0]]
            raise DistError(f"{what} differ across ranks (rank 0 vs rank{'s' if len(differ) > 1 else ''} "
                            f"{', '.join(map(str, differ))})")

    @contextmanager
    def fail_together(self, expected=()):
        """Run a block that has no collectives in it (setting up a run) on every rank; if it
        raises on any rank, raise PeerFailed on every rank, so each can exit cleanly. One
        process: exceptions pass through unchanged. Errors not in `expected` also print
        their traceback on their rank."""
        if self.size == 1:
            yield
            return
        error = None
        try:
            yield
        except Exception as e:  # noqa: BLE001 - any error must reach the other ranks, or they wait forever
            error = e
            if not isinstance(e, expected):
                traceback.print_exc()
        messages = self.allgather(None if error is None else (str(error) or type(error).__name__))
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if failed:
            rank, message = failed[0]
            same = len(failed) == self.size and len({m for _, m in failed}) == 1
            raise PeerFailed(message if same else f"rank {rank}: {message}") from error

    def set_up_together(self, build, expected=()):
        """build() on every rank, in three turns: rank 0, then the first rank on each other
        host, then the rest. Each turn finds the caches (downloads, the tokenizer, token files)
        filled by the turn before, on a folder shared by all hosts or local to each, instead
        of writing them at the same time. An error on any rank raises PeerFailed on every
        rank (see fail_together)."""
        my_turn = 0 if self.rank == 0 else 1 if self.local_rank == 0 else 2
        result = None
        for turn in range(3 if self.size > 1 else 1):
            with self.fail_together(expected):
                if turn == my_turn:
                    result = build()
        return result

    @contextmanager
    def abort_on_error(self, prog: str, collective=(), expected=()):
        """Run the training loop: an exception on one rank would leave the others waiting in
        a collective forever, so print `prog: error: rank R: ...` and abort every rank.
        Exceptions in `collective` are raised on all ranks alike (they pass through), as do
        KeyboardInterrupt and everything on one process."""
        try:
            yield
        except collective:
            raise
        except Exception as e:
            if self.size == 1:
                raise
            if not isinstance(e, expected):
                traceback.print_exc()
            self.abort(f"{prog}: error: rank {self.rank}: {str(e) or type(e).__name__}")


class MPICommunicator(Communicator):
    """The ranks of an MPI communicator (mpi4py), e.g. MPI.COMM_WORLD under mpiexec.

    timeout: seconds a collective may wait for the other ranks; past it, a watchdog thread
    says so on one line and aborts every rank (a rank that hung or was stopped would
    otherwise leave the others waiting forever). None: wait as long as it takes."""

    def __init__(self, comm, timeout: float | None = None, prog: str = "numpygpt train"):
        from mpi4py import MPI
        self.MPI = MPI
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.local_rank = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
        self.timeout, self.prog = timeout, prog
        self.waiting_since = None  # (time.monotonic(), what) while inside a collective
        if timeout:
            threading.Thread(target=self._watch, name="numpygpt-collective-watchdog", daemon=True).start()

    @contextmanager
    def _collective(self, what: str):
        self.waiting_since = (time.monotonic(), what)
        try:
            yield
        finally:
            self.waiting_since = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            since = self.waiting_since
            if since is not None and time.monotonic() - since[0] > self.timeout:
                self.abort(f"{self.prog}: error: rank {self.rank}: no answer from the other ranks for "
                           f"{self.timeout:g} s in {since[1]}: a rank has stopped or hangs "
                           "(--collective-timeout sets the wait)")

    def allreduce_sum(self, buffer):
        with self._collective("the gradients' allreduce"):
            self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)

    def reduce_scatter_sum(self, buffer, bounds):
        with self._collective("the gradients' reduce-scatter"):
            self.comm.Reduce_scatter(self.MPI.IN_PLACE, buffer, recvcounts=np.diff(bounds), op=self.MPI.SUM)
        return buffer[:bounds[self.rank + 1] - bounds[self.rank]]

    def _counts_displacements(self, bounds):
        return np.diff(bounds), np.asarray(bounds[:-1])

    def allgather_shards(self, buffer, bounds):
        with self._collective("the weights' allgather"):
            self.comm.Allgatherv(self.MPI.IN_PLACE, [buffer, self._counts_displacements(bounds)])

    def gather_shards(self, shard, bounds):
        full = np.empty(bounds[-1], dtype=shard.dtype) if self.rank == 0 else None
        with self._collective("gathering the optimizer state"):
            self.comm.Gatherv(shard, [full, self._counts_displacements(bounds)] if self.rank == 0 else None, root=0)
        return full

    def allgather(self, value):
        with self._collective("an allgather"):
            return self.comm.allgather(value)

    def abort(self, message: str):
        """Print message and end every rank of the job (mpiexec then exits non-zero)."""
        print(message, file=sys.stderr, flush=True)
        # Abort tears the job down at once, output still in the launcher's pipes with it:
        # a moment's pause lets mpiexec pass the message on first.
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(2)


class RankRows:
    """The dropout generator on rank r: Dropout draws one seed per call from the shared
    generator (in step on every rank) and numbers the mask's elements across the global batch,
    so rank r, holding rows r*B..(r+1)*B, keeps the elements numbered from r * (its elements):
    exactly its rows of the mask one process makes for the whole batch (layers.Dropout)."""

    def __init__(self, rng: np.random.Generator, rank: int):
        self.rng, self.rank = rng, rank

    def integers(self, *args, **kwargs):
        return self.rng.integers(*args, **kwargs)


class DataParallelAdamW:
    """Plain data parallel: all-reduce the gradients, and every rank updates the whole model
    with the same AdamW step. On one process this is clip + AdamW, as it always was.

    step(lr, grad_clip) -> the global gradient norm before clipping.
    """

    def __init__(self, comm: Communicator, params, **adamw):
        self.comm = comm
        self.params = params
        self.optimizer = AdamW(params, **adamw)

    @property
    def step_count(self) -> int:
        return self.optimizer.step_count

    @property
    def state_bytes(self) -> int:
        """Bytes of AdamW moments this rank holds."""
        return self.optimizer.m.nbytes + self.optimizer.v.nbytes

    def step(self, lr: float, grad_clip: float) -> float:
        self.comm.allreduce_sum(self.params.grad)
        norm = clip_grad_norm(self.params.grad, grad_clip)
        self.optimizer.step(lr)
        return norm

    def state_dict(self) -> dict:
        """The whole optimizer state (a collective call under ZeRO: every rank must make it)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: dict):
        """From a whole optimizer state (as written by any run, sharded or not)."""
        self.optimizer.load_state_dict(state)


class ZeroAdamW(DataParallelAdamW):
    """ZeRO stage 1: each rank keeps AdamW's moments for its shard of the flat buffer only.

    Reduce-scatter the gradients (each rank receives the sum of its shard, in place at the
    start of the gradient buffer, which the next step zeroes anyway), take the global norm
    from the shards' sums of squares, update the shard, all-gather the weights. Every rank
    ends the step with the same weights as plain data parallel."""

    def __init__(self, comm: Communicator, params, **adamw):
        self.comm = comm
        self.params = params
        self.bounds = shard_bounds(params.data.size, comm.size)
        span = self.bounds[comm.rank], self.bounds[comm.rank + 1]
        self.optimizer = AdamW(params, span=span, **adamw)

    def step(self, lr: float, grad_clip: float) -> float:
        grad_shard = self.comm.reduce_scatter_sum(self.params.grad, self.bounds)
        norm = clip_grad_norm(grad_shard, grad_clip, self.comm.sum(kernels.sum_of_squares(grad_shard)))
        self.optimizer.step(lr, grad=grad_shard)
        self.comm.allgather_shards(self.params.data, self.bounds)
        return norm

    def state_dict(self) -> dict:
        return {"m": self.comm.gather_shards(self.optimizer.m, self.bounds),
                "v": self.comm.gather_shards(self.optimizer.v, self.bounds),
                "step": self.optimizer.step_count}

    def load_state_dict(self, state: dict):
        for key in ("m", "v"):
            if state[key].shape != self.params.data.shape:
                raise ValueError(f"optimizer state {key} has {state[key].shape[0]} entries, "
                                 f"the model has {self.params.data.size}")
        start, stop = self.optimizer.start, self.optimizer.stop
        self.optimizer.load_state_dict({"m": state["m"][start:stop], "v": state["v"][start:stop],
                                        "step": state["step"]})


def data_parallel_optimizer(comm: Communicator, params, zero: bool = False, **adamw) -> DataParallelAdamW:
    """AdamW across the ranks of `comm`: sharded (ZeRO-1) when `zero`, else replicated."""
    return (ZeroAdamW if zero else DataParallelAdamW)(comm, params, **adamw)
