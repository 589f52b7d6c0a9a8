"""Memory that a training step frees is kept for the next step, not handed back to the OS.

A step makes the same arrays every time: activations, their gradients, the temporaries of each
backward. glibc's malloc serves each array over 128 KiB (a threshold that grows to 32 MiB) with
its own mmap and returns it to the OS with munmap when NumPy frees it, so the next step's
arrays are fresh pages that the kernel maps and zeroes again on first touch, one page fault per
4 KiB page (or 2 MiB huge page): ~33,000 a step for the `small` preset, and the kernel that first
writes an array pays for them (GELU's forward took 5x its own time). With malloc's mmap use off
and trimming off, freed blocks stay in malloc's heap and the next step's arrays reuse them: no
page faults after the first step, the same peak memory (benchmarks/bench_train.py measures both).
Threads (the shards of a batch, training.threads) allocate from that same heap: each thread's
own arena would hand its freed memory back to the OS (15,000 faults a `small` step on 2 shards).
"""
import ctypes
import ctypes.util
import os
import sys

# mallopt parameters, from glibc's <malloc.h>
M_TRIM_THRESHOLD = -1  # free memory at the heap's top is returned to the OS beyond this many bytes
M_MMAP_MAX = -4        # how many blocks malloc may serve with mmap at once: 0 = none, all from the heap
M_ARENA_MAX = -8       # how many heaps (arenas) threads may allocate from: 1 = the main heap only
INT_MAX = 2 ** 31 - 1  # mallopt takes a C int


def reuse_freed_memory() -> bool:
    """Tell the C library's malloc to keep freed memory for reuse (glibc; elsewhere nothing is
    changed). Process-wide, for a process that repeats the same steps: the training loop and
    evaluation call it. Returns whether the settings were taken."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, INT_MAX), mallopt(M_ARENA_MAX, 1)])


def physical_memory() -> int | None:
    """This machine's memory in bytes (None where the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None
