"""Keep freed memory in the process while training on the CPU (glibc only).

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves every
block above its mmap threshold (32 MiB at most) with a fresh ``mmap`` and hands
it back to the kernel on ``free``, so a training step whose activations are
larger than that (SimCLR at batch 256 on 64 px images: 67 MB for one
convolution's output) makes the kernel fault in and zero every page again, every
step. On our 2-core machines that was about two million page faults in two
epochs over 1,024 images and a fifth of the CPU time spent in the kernel
(``benchmarks/bench_pretrain.py`` prints the time with and without).

:func:`reuse_freed_memory` turns ``mmap`` off for the duration (every block
comes from the heap) and raises the trim threshold, so freed blocks are reused by
the next step. On exit it restores limits close to glibc's own (mmap for blocks
above 32 MiB, the value its dynamic threshold grows to under such workloads), or the
process's own ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` where set (a Dask
worker's, for one), and returns the free heap to the kernel. Elsewhere (macOS,
Windows, musl) it does nothing.
"""

import contextlib
import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4


def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    needed = ("gnu_get_libc_version", "mallopt", "malloc_trim")
    return libc if all(hasattr(libc, name) for name in needed) else None


@contextlib.contextmanager
def reuse_freed_memory():
    """Serve large CPU allocations from the heap and keep them there, for a block of code."""
    libc = _glibc()
    if libc is None:
        yield
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30)
    try:
        yield
    finally:
        libc.mallopt(_M_MMAP_MAX, 65536)
        libc.mallopt(_M_MMAP_THRESHOLD, _env_bytes("MALLOC_MMAP_THRESHOLD_", 32 << 20))
        libc.mallopt(_M_TRIM_THRESHOLD, _env_bytes("MALLOC_TRIM_THRESHOLD_", 64 << 20))
        libc.malloc_trim(0)


def _env_bytes(name, default):
    """The process's glibc tunable ``name`` (bytes) if set to a number, else ``default``."""
    try:
        return int(os.environ[name])
    except (KeyError, ValueError):
        return default
