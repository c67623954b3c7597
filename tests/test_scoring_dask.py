"""Pool scoring on a Dask cluster (issue 42, part 2): the local call's Bunch, bit for bit."""

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from xal_sklearn import ActiveLearner, CNNClassifier, dual_criterion_sampling, score_pool  # noqa: E402
from xal_sklearn.datasets import make_lesion_phantoms  # noqa: E402
from xal_sklearn.scoring_dask import scoring_on  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def fitted():
    d = make_lesion_phantoms(150, 32, shortcut=0.0, random_state=3)
    net = CNNClassifier(n_classes=3, max_epochs=2, batch_size=16, random_state=0)
    net.fit(d.X[:40], d.y[:40])
    return net, d


def _same(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        if key == "grid_shape":
            assert tuple(a[key]) == tuple(b[key])
        else:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_the_cluster_gives_the_local_bunch(client, fitted):
    net, d = fitted
    masks = [m if i % 4 else None for i, m in enumerate(d.roi_masks)]  # some without ROI
    kwargs = dict(return_maps=True, embeddings="gradient", alpha=0.4)
    _same(score_pool(net, d.X, masks, client=client, **kwargs),
          score_pool(net, d.X, masks, **kwargs))


def test_a_mapped_pool_is_read_where_the_workers_are(client, fitted, tmp_path):
    net, d = fitted
    np.save(tmp_path / "X.npy", d.X)
    np.save(tmp_path / "M.npy", d.roi_masks)
    X = np.load(tmp_path / "X.npy", mmap_mode="r")
    M = np.load(tmp_path / "M.npy", mmap_mode="r")
    from xal_sklearn.scoring_dask import _Mapped, _portable

    assert isinstance(_portable(X), _Mapped)  # the file's name travels, not the pixels
    _same(score_pool(net, X, M, client=client), score_pool(net, d.X, d.roi_masks))


def test_strategies_inside_the_block_score_on_the_cluster(client, fitted, monkeypatch):
    net, d = fitted
    learner = ActiveLearner(net, dual_criterion_sampling, X_training=d.X[:40],
                            y_training=d.y[:40])
    local, _ = learner.query(d.X[40:], n_instances=10, roi_masks=d.roi_masks[40:])
    import xal_sklearn.scoring_dask as sd

    calls = []
    real = sd.raw_scores_on_cluster
    monkeypatch.setattr(sd, "raw_scores_on_cluster",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    with scoring_on(client):
        remote, _ = learner.query(d.X[40:], n_instances=10, roi_masks=d.roi_masks[40:])
    assert calls and list(remote) == list(local)


def test_a_scheduler_that_does_not_answer_is_said_before_any_work(fitted, monkeypatch):
    import socket

    import xal_sklearn.scoring_dask as sd

    monkeypatch.setattr(sd, "CONNECT_TIMEOUT", 2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    net, d = fitted
    with pytest.raises(ValueError, match=f"No Dask scheduler answers at tcp://127.0.0.1:{port}"):
        score_pool(net, d.X[:8], client=f"tcp://127.0.0.1:{port}")


def test_a_campaign_query_on_the_cluster(client, tmp_path):
    """xal campaign query --scheduler: the same batch as a local query."""
    import csv
    import shutil

    from conftest import write_scan_folder
    from xal_sklearn.campaign import Campaign
    from xal_sklearn.cli import main

    d = make_lesion_phantoms(40, 32, shortcut=0.0, random_state=4)
    root = tmp_path / "pool"
    write_scan_folder(d, root, manifest="m.csv")
    c = Campaign.create(tmp_path / "study", root, ["a", "b", "c"], manifest=root / "m.csv",
                        image_size=32, epochs=1)
    first = c.query(6)
    with open(tmp_path / "answers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["xal_id", "image", "label"])
        w.writerows([i, c.pool["images"][i], "abc"[d.y[i]]] for i in first["ids"])
    Campaign.open(c.folder).import_labels(tmp_path / "answers.csv")
    shutil.copytree(c.folder, tmp_path / "twin")
    local = Campaign.open(tmp_path / "twin").query(5)["ids"]
    address = client.scheduler.address
    assert main(["campaign", "query", str(c.folder), "-n", "5", "--scheduler", address]) == 0
    state = Campaign.open(c.folder).state
    assert state["pending"]["2"] == local


class KillsItsWorkerOnce:
    """A pool Dataset whose worker dies (os._exit) the first time it reads item
    ``fatal``, as a worker lost mid-scoring (out of memory, a preempted node)."""

    def __init__(self, X, masks, fatal, marker):
        self.X, self.masks, self.fatal, self.marker = X, masks, fatal, str(marker)

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        import os
        from pathlib import Path

        if i == self.fatal and not Path(self.marker).exists():
            Path(self.marker).touch()
            os._exit(1)
        return self.X[i], self.masks[i]


def test_a_lost_worker_s_shard_is_scored_again(client, fitted, tmp_path):
    net, d = fitted
    pool = KillsItsWorkerOnce(d.X, d.roi_masks, fatal=70, marker=tmp_path / "died")
    remote = score_pool(net, pool, client=client)
    assert (tmp_path / "died").exists()  # a worker did die
    _same(remote, score_pool(net, d.X, d.roi_masks))
