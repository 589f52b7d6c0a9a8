"""numpygpt: GPT-2 in pure NumPy, every forward and backward pass written by hand."""
import os

# Two thread pools take turns on the cores: OpenBLAS's for the matmuls, OpenMP's for the Numba
# kernels between them. Each pool's idle threads spin before they sleep, stealing the cores
# from the other pool's next call, so both are told to sleep soon (set before either loads;
# a value the user set wins):
# - OMP_WAIT_POLICY=PASSIVE: OpenMP's threads sleep at once (a 64x64 matmul right after a
#   kernel takes 0.03 ms with it, 3 ms without);
# - OPENBLAS_THREAD_TIMEOUT=18: OpenBLAS's threads spin 2^18 cycles (~0.1 ms), not its default
#   2^28 (~0.1 s), before they sleep (a shakespeare step: 249-266 ms with it, 267-323 ms
#   without; the tiny preset's 7 ms step, all wake-ups, costs ~1 ms more with it).
THREAD_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_THREAD_TIMEOUT": "18"}
for _name, _value in THREAD_DEFAULTS.items():
    os.environ.setdefault(_name, _value)

# Under mpiexec the ranks on one host share its cores: unless told otherwise, each rank runs
# cores // ranks-on-this-host BLAS, OpenMP and Numba threads, so 2 ranks on 2 cores run 2
# threads, not 4 that fight over the cores. Must be set before NumPy and Numba load.
_ranks_here = os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or "1"
if _ranks_here.isdigit() and int(_ranks_here) > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_name, str(max(1, _cores // int(_ranks_here))))
