"""`numpygpt train` under mpiexec with one rank that fails in the middle of training:

    mpiexec -n 2 python tests/failing_rank.py RANK STEP raise|hang [train flags ...]

makes rank RANK raise (or hang, as a stopped process does) at the end of step STEP, through a
communicator of the tests' own, so that the tests see how every other rank learns of it
(numpygpt.training.dist: abort_on_error, and the collective timeout).
"""
import time
import sys

from numpygpt import commands
from numpygpt.training import dist


class FailingCommunicator(dist.MPICommunicator):
    """MPI's world, but rank `fail_rank` raises (or hangs) in its `fail_step`-th end-of-step
    check."""

    def __init__(self, comm, fail_rank: int, fail_step: int, how: str, timeout=None, prog="train.py"):
        super().__init__(comm, timeout, prog)
        self.fail_rank, self.fail_step, self.how, self.steps = fail_rank, fail_step, how, 0

    def any(self, flag: bool) -> bool:  # called once at the end of every training step
        self.steps += 1
        if self.rank == self.fail_rank and self.steps == self.fail_step:
            if self.how == "hang":
                time.sleep(3600)
            raise RuntimeError(f"injected failure at step {self.steps}")
        return super().any(flag)


if __name__ == "__main__":
    rank, step, how = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    from mpi4py import MPI
    dist.world = lambda timeout=None, prog="train.py": FailingCommunicator(MPI.COMM_WORLD, rank, step, how, timeout,
                                                                           prog)
    sys.exit(commands.main(["train", *sys.argv[4:]], prog="train.py"))
