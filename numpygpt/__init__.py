"""numpygpt: GPT-2 in pure NumPy, every forward and backward pass written by hand."""
import os

# The Numba kernels run on OpenMP threads between BLAS calls. OpenMP's default is to spin for
# a while after each parallel loop, which steals the cores from the very next matmul's BLAS
# threads (measured: a 64x64 matmul after a kernel went from 0.03 ms to 3 ms). Passive
# waiting hands the cores back at once. Must be set before the OpenMP runtime loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Under mpiexec the ranks on one host share its cores: unless told otherwise, each rank runs
# cores // ranks-on-this-host BLAS, OpenMP and Numba threads, so 2 ranks on 2 cores run 2
# threads, not 4 that fight over the cores. Must be set before NumPy and Numba load.
_ranks_here = os.environ.get("MPI_LOCALNRANKS") or os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE") or "1"
if _ranks_here.isdigit() and int(_ranks_here) > 1:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ.setdefault(_name, str(max(1, _cores // int(_ranks_here))))
