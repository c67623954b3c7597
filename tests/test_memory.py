"""Heap reuse during CPU pretraining (glibc): freed large blocks are not faulted in again."""
import resource

import pytest
import torch

from xal_sklearn import _memory
from xal_sklearn._memory import reuse_freed_memory


def _faults_allocating(n=24, mib=64):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        t = torch.ones(mib << 18)  # mib MiB of float32, every page written
        del t
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(_memory._glibc() is None, reason="needs glibc's mallopt")
def test_reuse_freed_memory_stops_refaulting_large_blocks():
    default = _faults_allocating()
    # 24 blocks of 64 MiB: by default each is a fresh mmap (~16k faults of 4 KiB pages)
    if default < 16 * 16_000:
        pytest.skip(f"{default} faults: this kernel maps large blocks cheaply (huge pages)")
    with reuse_freed_memory():
        reused = _faults_allocating()
    # with reuse the heap keeps them: the first block faults in, the kernel may take a
    # few pages back in between (16k-66k measured on our machines)
    assert reused < default / 3


class _FakeLibc:
    def __init__(self):
        self.calls = []

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1

    def malloc_trim(self, pad):
        self.calls.append(("trim", pad))
        return 1


def test_limits_are_restored_even_when_the_block_fails(monkeypatch):
    libc = _FakeLibc()
    monkeypatch.setattr(_memory, "_glibc", lambda: libc)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with pytest.raises(KeyboardInterrupt):
        with reuse_freed_memory():
            assert libc.calls == [(_memory._M_MMAP_MAX, 0), (_memory._M_TRIM_THRESHOLD, 1 << 30)]
            raise KeyboardInterrupt
    assert libc.calls[2:] == [(_memory._M_MMAP_MAX, 65536),
                              (_memory._M_MMAP_THRESHOLD, 32 << 20),
                              (_memory._M_TRIM_THRESHOLD, 64 << 20), ("trim", 0)]


def test_the_process_own_tunables_are_restored(monkeypatch):
    """A Dask worker starts with MALLOC_TRIM_THRESHOLD_=65536: it gets it back after the
    block, not glibc's figure."""
    libc = _FakeLibc()
    monkeypatch.setattr(_memory, "_glibc", lambda: libc)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "not a number")
    with reuse_freed_memory():
        pass
    assert libc.calls[2:] == [(_memory._M_MMAP_MAX, 65536),
                              (_memory._M_MMAP_THRESHOLD, 32 << 20),
                              (_memory._M_TRIM_THRESHOLD, 65536), ("trim", 0)]


def test_reuse_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(_memory, "_glibc", lambda: None)
    with reuse_freed_memory():
        assert torch.ones(4).sum() == 4
