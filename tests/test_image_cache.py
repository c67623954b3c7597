"""The loader's on-disk cache (issue 42, part 1): written as decoded, mapped when read,
damaged or interrupted builds never read as data, flat memory in the pool's size."""

import csv
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from xal_sklearn.datasets import DataLoadError, load_image_folder


def _folder(root, n, size=24, corrupt=None, seed=0):
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "label"])
        for i in range(n):
            name = f"img/{i:04d}.png"
            if i == corrupt:
                (root / name).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
            else:
                Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(
                    root / name)
            w.writerow([name, "ab"[i % 2]])
    return root


def _entries(cache_dir):
    return sorted(p.name for p in cache_dir.iterdir()) if cache_dir.exists() else []


def test_a_corrupt_file_and_the_cache_read_back_mapped(tmp_path):
    root = _folder(tmp_path / "data", 300, corrupt=123)
    cache = tmp_path / "cache"
    with pytest.raises(DataLoadError, match=r"line 125: .*0123\.png"):
        load_image_folder(root, cache_dir=cache)
    assert [e for e in _entries(cache)] == []  # nothing half-built is left behind
    with pytest.warns(UserWarning, match="Skipped 1 of 300"):
        first = load_image_folder(root, cache_dir=cache, on_error="skip")
    assert isinstance(first.X, np.memmap) and isinstance(first.roi_masks, np.memmap)
    assert first.X.shape == (299, 1, 24, 24) and len(first.y) == len(first.filenames) == 299
    assert "img/0123.png" not in first.filenames
    memory = load_image_folder(root, cache=False, on_error="skip")
    np.testing.assert_array_equal(first.X, memory.X)
    np.testing.assert_array_equal(first.y, memory.y)
    again = load_image_folder(root, cache_dir=cache, on_error="skip")
    assert isinstance(again.X, np.memmap) and not again.X.flags.writeable
    np.testing.assert_array_equal(again.X, memory.X)
    assert len(_entries(cache)) == 1


@pytest.mark.parametrize("damage", ["truncate", "shapes", "missing"])
def test_a_damaged_cache_is_rebuilt_not_read(tmp_path, damage):
    root = _folder(tmp_path / "data", 40)
    cache = tmp_path / "cache"
    good = np.array(load_image_folder(root, cache_dir=cache).X)
    folder = cache / _entries(cache)[0]
    if damage == "truncate":  # a copy cut short
        with open(folder / "X.npy", "r+b") as f:
            f.truncate(os.path.getsize(folder / "X.npy") // 2)
    elif damage == "shapes":  # the files of another build under this key
        meta = json.loads((folder / "meta.json").read_text())
        meta["shapes"]["X"][0] = 41
        (folder / "meta.json").write_text(json.dumps(meta))
    else:
        (folder / "meta.json").unlink()
    back = load_image_folder(root, cache_dir=cache)
    np.testing.assert_array_equal(back.X, good)
    assert len(_entries(cache)) == 1


def test_an_interrupted_build_leaves_no_cache(tmp_path, monkeypatch):
    root = _folder(tmp_path / "data", 120)
    cache = tmp_path / "cache"
    from xal_sklearn.datasets import _folder as loader

    real, calls = loader.read_image, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 60:
            raise KeyboardInterrupt  # Ctrl-C half-way
        return real(*args, **kwargs)

    monkeypatch.setattr(loader, "read_image", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_image_folder(root, cache_dir=cache)
    assert _entries(cache) == []
    monkeypatch.setattr(loader, "read_image", real)
    assert load_image_folder(root, cache_dir=cache).X.shape[0] == 120


def test_what_a_killed_build_left_is_removed_a_day_later(tmp_path):
    root = _folder(tmp_path / "data", 10)
    cache = tmp_path / "cache"
    (cache / ".tmp-killed").mkdir(parents=True)
    (cache / ".tmp-running").mkdir()
    day_ago = time.time() - 25 * 3600
    os.utime(cache / ".tmp-killed", (day_ago, day_ago))
    load_image_folder(root, cache_dir=cache)
    entries = _entries(cache)
    assert ".tmp-killed" not in entries and ".tmp-running" in entries and len(entries) == 2


def test_scores_from_the_cache_equal_scores_from_arrays(tmp_path):
    from xal_sklearn import CNNClassifier, score_pool

    root = _folder(tmp_path / "data", 64, size=32)
    cached = load_image_folder(root, cache_dir=tmp_path / "cache")
    memory = load_image_folder(root, cache=False)
    net = CNNClassifier(n_classes=2, max_epochs=1, batch_size=16, random_state=0)
    net.fit(memory.X[:32], memory.y[:32])
    a, b = score_pool(net, cached.X), score_pool(net, memory.X)
    for key in ("proba", "uncertainty", "combined"):
        np.testing.assert_array_equal(a[key], b[key])


_PEAK = """
import sys, threading, time
from xal_sklearn.datasets import load_image_folder

peak, done = [0], [False]
def watch():  # anonymous memory (the heap), not the mapped cache's file pages
    while not done[0]:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak[0] = max(peak[0], int(line.split()[1]))
        time.sleep(0.005)
threading.Thread(target=watch, daemon=True).start()
time.sleep(0.05)
base = peak[0]
b = load_image_folder(sys.argv[1], cache_dir=sys.argv[2], cache=sys.argv[3] == "1")
float(b.X[-1].sum())
time.sleep(0.05)
done[0] = True
print((peak[0] - base) // 1024)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads /proc")
def test_building_the_cache_takes_memory_flat_in_the_pool_size(tmp_path):
    """The heap grows with the pool when the arrays are built in memory (cache=False),
    and does not when they go to the cache: 300 and 1,200 images of 96 px (3.5 and 14
    MiB of float32)."""
    growth = {}
    for n in (300, 1200):
        root = _folder(tmp_path / f"d{n}", n, size=96, seed=n)
        for cache in (True, False):
            out = subprocess.run([sys.executable, "-c", _PEAK, str(root),
                                  str(tmp_path / f"c{n}"), "1" if cache else "0"],
                                 capture_output=True, text=True, check=True)
            growth[n, cache] = int(out.stdout.split()[-1])
    in_memory = growth[1200, False] - growth[300, False]
    cached = growth[1200, True] - growth[300, True]
    assert in_memory >= 10, growth  # 10.5 MiB more pixels: the in-memory build holds them
    assert cached <= in_memory / 3, growth


# --- a campaign's pool, decoded once ---------------------------------------------------

def _campaign(tmp_path, n=30):
    from xal_sklearn.campaign import Campaign

    root = _folder(tmp_path / "pool", n, size=40)
    (root / "roi").mkdir()
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask"])
        for i in range(n):
            mask = np.zeros((40, 40), np.uint8)
            mask[5:15, 5 + i % 10:20] = 255
            Image.fromarray(mask).save(root / "roi" / f"{i:04d}.png")
            w.writerow([f"img/{i:04d}.png", f"roi/{i:04d}.png" if i % 3 else ""])
    return Campaign.create(tmp_path / "study", root, ["a", "b"], manifest=root / "manifest.csv",
                           image_size=32, epochs=1), root


def test_a_campaign_reads_its_pool_from_the_cache(tmp_path):
    from xal_sklearn.campaign import Campaign, PoolImages

    c, root = _campaign(tmp_path)
    data = c._dataset(list(range(30)))
    direct = PoolImages(root, c.pool["images"], c.pool["masks"], (32, 32))
    assert (c.folder / "cache" / "images.npy").is_file()
    for k in (0, 1, 2, 29):
        np.testing.assert_array_equal(data.image(k), direct.image(k))
        if direct.mask(k) is None:
            assert data.mask(k) is None
        else:
            np.testing.assert_array_equal(data.mask(k), direct.mask(k))
    assert c._original_size(3) == (40, 40)
    # a pool file that changes is read again: the cache is rebuilt, not trusted
    Image.fromarray(np.full((40, 40), 255, np.uint8)).save(root / "img" / "0003.png")
    os.utime(root / "img" / "0003.png", (time.time() + 5, time.time() + 5))
    fresh = Campaign.open(c.folder)._dataset([3])
    np.testing.assert_array_equal(fresh.image(0), np.ones((1, 32, 32), np.float32))
    # a cache cut short is rebuilt too
    with open(c.folder / "cache" / "images.npy", "r+b") as f:
        f.truncate(1000)
    again = Campaign.open(c.folder)._dataset([3, 4])
    np.testing.assert_array_equal(again.image(1), direct.image(4))


def test_a_cached_pool_travels_by_its_folder(tmp_path):
    """Pickled for a Dask worker, a campaign's pool carries the cache's folder, not its
    pixels, and maps the same images on the other side."""
    import pickle

    c, _ = _campaign(tmp_path, n=30)
    data = c._dataset(list(range(5, 30)))
    blob = pickle.dumps(data)
    assert len(blob) < 4000  # 25 images of 32 x 32 float32 alone would be 100 KB
    back = pickle.loads(blob)
    for k in (0, 7, 24):
        np.testing.assert_array_equal(back.image(k), data.image(k))
        m, n = back.mask(k), data.mask(k)
        assert (m is None) == (n is None) and (m is None or (m == n).all())


def test_a_campaign_of_three_thousand_files(tmp_path):
    """init, query, import, query and status on 3,000 files in test time; status stays
    well under a second (issue 42, part 3; the 100,000-file figures are benchmarks)."""
    from xal_sklearn.campaign import Campaign

    root = _folder(tmp_path / "pool", 3000, size=16)
    c = Campaign.create(tmp_path / "study", root, ["a", "b"], image_size=16, epochs=1,
                        strategy="entropy")
    first = Campaign.open(c.folder).query(20)
    with open(tmp_path / "answers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["xal_id", "image", "label"])
        w.writerows([i, c.pool["images"][i], "ab"[i % 2]] for i in first["ids"])
    Campaign.open(c.folder).import_labels(tmp_path / "answers.csv")
    second = Campaign.open(c.folder).query(20)
    assert second["n_pool"] == 2980 and not set(second["ids"]) & set(first["ids"])
    start = time.perf_counter()
    status = Campaign.open(c.folder).status()
    assert time.perf_counter() - start < 1.0
    assert status["n_pool"] == 3000 and status["n_labelled"] == 20


def test_an_unreadable_pool_file_is_named_and_no_cache_is_left(tmp_path):
    from xal_sklearn.campaign import Campaign, CampaignError

    c, root = _campaign(tmp_path, n=12)
    (root / "img" / "0007.png").write_bytes(b"not an image")
    with pytest.raises(CampaignError, match=r"Could not read a pool image: .*0007\.png"):
        Campaign.open(c.folder).query(3)
    assert not (c.folder / "cache").exists() and not (c.folder / "batches").exists()
    assert [p.name for p in c.folder.iterdir() if p.name.startswith(".cache")] == []
