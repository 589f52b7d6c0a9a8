"""numpygpt: GPT-2 in pure NumPy, every forward and backward pass written by hand."""
import os

# The Numba kernels run on OpenMP threads between BLAS calls. OpenMP's default is to spin for
# a while after each parallel loop, which steals the cores from the very next matmul's BLAS
# threads (measured: a 64x64 matmul after a kernel went from 0.03 ms to 3 ms). Passive
# waiting hands the cores back at once. Must be set before the OpenMP runtime loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
