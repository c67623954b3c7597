"""Reading a pool ahead of the network (issue 42): order, errors, stopping, overlap, and
the batched fetch of file pools in threads."""

import threading
import time

import numpy as np
import pytest
import torch
from sklearn.base import clone

from xal_sklearn import score_pool
from xal_sklearn._pool import iter_pool, read_ahead_of, reads_ahead
from xal_sklearn.campaign import PoolImages


def _reader_threads():
    return [t for t in threading.enumerate() if t.name == "xal-read-ahead"]


def test_items_come_in_order_and_the_reader_is_gone_after():
    assert list(read_ahead_of(iter(range(50)), depth=3)) == list(range(50))
    assert not _reader_threads()


def test_an_error_is_raised_at_its_item_after_the_items_before_it():
    def items():
        yield from range(4)
        raise ValueError("bad item 4")

    got = []
    with pytest.raises(ValueError, match="bad item 4"):
        for item in read_ahead_of(items()):
            got.append(item)
    assert got == [0, 1, 2, 3]
    assert not _reader_threads()


def test_stopping_early_stops_the_reader():
    read = []

    def items():
        for i in range(1000):
            read.append(i)
            yield i

    for i in read_ahead_of(items(), depth=2):
        if i == 5:
            break
    assert not _reader_threads()
    assert len(read) <= 5 + 1 + 2 + 1  # the consumer's items, the queue and one in hand


def test_reading_overlaps_the_consumer():
    """10 reads and 10 computations of 0.1 s each: one after the other 2 s, overlapped
    about 1.1 s."""
    def slow_items():
        for i in range(10):
            time.sleep(0.1)
            yield i

    start = time.perf_counter()
    for _ in read_ahead_of(slow_items()):
        time.sleep(0.1)
    assert time.perf_counter() - start < 1.6


class _Recorded(torch.utils.data.Dataset):
    """Items ``(image, mask)``; records the batched calls and the threads that made them."""

    def __init__(self, X, masks):
        self.X, self.masks, self.calls, self.threads = X, masks, [], set()

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        return self.X[i], self.masks[i]

    def __getitems__(self, indices):
        self.calls.append(list(indices))
        self.threads.add(threading.current_thread().name)
        return [self[i] for i in indices]


def test_the_batched_fetch_is_used_off_the_main_thread_and_scores_are_unchanged(
        fitted_net, phantoms):
    X, M = phantoms.X[:70], phantoms.roi_masks[:70]
    data = _Recorded(X, M)
    via_dataset = score_pool(fitted_net, data, batch_size=32, read_ahead=True)
    assert data.calls == [list(range(0, 32)), list(range(32, 64)), list(range(64, 70))]
    assert data.threads == {"xal-read-ahead"}
    direct = score_pool(fitted_net, X, M, batch_size=32)
    for key in ("proba", "uncertainty", "alignment", "combined"):
        np.testing.assert_array_equal(via_dataset[key], direct[key])


def test_on_the_cpu_the_pool_is_read_in_turn_unless_asked(fitted_net, phantoms):
    """None reads ahead only beside an accelerator: on the CPU reading competes with the
    network for its cores, and did not pay."""
    data = _Recorded(phantoms.X[:40], phantoms.roi_masks[:40])
    score_pool(fitted_net, data, batch_size=32)
    assert data.threads == {threading.main_thread().name}
    assert not reads_ahead(fitted_net, None) and reads_ahead(fitted_net, True)
    assert reads_ahead(clone(fitted_net).set_params(device="cuda"), None)


def test_a_bad_batch_is_named_after_the_good_ones(phantoms):
    X = phantoms.X[:40].copy()
    X[33] = np.nan
    seen = []
    with pytest.raises(ValueError, match="33"):
        for x, _, _, start in iter_pool(X, None, 16, read_ahead=True):
            seen.append(start)
    assert seen == [0, 16]


def _write_pngs(folder, n, size=40, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir()
    names = []
    for i in range(n):
        names.append(f"{i:03d}.png")
        Image.fromarray(rng.integers(0, 255, (size, size + 7), dtype=np.uint8)).save(
            folder / names[-1])
    return names


def test_file_pools_decode_a_batch_in_threads_as_one_thread_would(tmp_path):
    names = _write_pngs(tmp_path / "img", 24)
    files = [f"img/{name}" for name in names]
    threaded = PoolImages(tmp_path, files, [""] * 24, (16, 16), n_threads=4)
    single = PoolImages(tmp_path, files, [""] * 24, (16, 16), n_threads=1)
    a, b = threaded.__getitems__(list(range(24))), single.__getitems__(list(range(24)))
    assert len(a) == len(b) == 24
    for (ia, ma), (ib, mb) in zip(a, b):
        np.testing.assert_array_equal(ia, ib)
        assert ma is None and mb is None
    (tmp_path / files[17]).write_bytes(b"not a png")
    with pytest.raises(Exception, match="017.png"):
        threaded.__getitems__(list(range(24)))
