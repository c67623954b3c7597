"""Self-supervised warm start (issue 17, parts 1-2): pretrain_encoder, EncoderWeights and
CNNClassifier(init_weights=)."""

import functools
import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from skorch.callbacks import Callback
from torch import nn

from xal_sklearn import ActiveLearner, CNNClassifier, EncoderWeights, SmallCNN, pretrain_encoder
from xal_sklearn._persist import FormatError
from xal_sklearn.datasets import make_lesion_phantoms
from xal_sklearn.pretrain import (EncoderMismatchError, augment_views, byol_loss,
                                  encoder_features, nt_xent_loss)


@pytest.fixture(scope="module")
def noisy():
    """Phantoms noisy enough that random conv features do not already separate them."""
    return make_lesion_phantoms(480, 32, shortcut=0.0, noise=0.15, random_state=0)


@pytest.fixture(scope="module")
def simclr(noisy):
    return pretrain_encoder(noisy.X, method="simclr", epochs=20, batch_size=96,
                            random_state=0, progress=False)


def _frozen_features(weights, X, seed):
    torch.manual_seed(seed)
    module = SmallCNN()
    if weights is not None:
        weights.load_into(module)
    module.eval()
    with torch.no_grad():
        return encoder_features(module, torch.from_numpy(X)).numpy()


def _probe(F, y, n_train=60):
    F = (F - F.mean(0)) / (F.std(0) + 1e-6)
    return LogisticRegression(max_iter=3000).fit(F[:n_train], y[:n_train]).score(
        F[240:], y[240:])


def test_linear_probe_on_pretrained_features_beats_random_features(noisy, simclr):
    """Measured: 60 labels, held-out 240; SimCLR 20 epochs 0.625, random 0.42-0.52."""
    ours = _probe(_frozen_features(simclr, noisy.X, 1), noisy.y)
    random = [_probe(_frozen_features(None, noisy.X, s), noisy.y) for s in range(3)]
    assert ours > max(random) + 0.03, (ours, random)


def test_byol_trains_the_encoder_without_collapse(noisy):
    w = pretrain_encoder(noisy.X[:192], method="byol", epochs=3, batch_size=64, random_state=0,
                         progress=False)
    fresh = SmallCNN().state_dict()
    assert w.info["method"] == "byol" and np.isfinite(w.info["final_loss"])
    assert any(not torch.allclose(w.state[k].float(), fresh[k].float()) for k in w.state)
    F = _frozen_features(w, noisy.X[:64], 0)
    assert F.std(0).mean() > 1e-4  # not one point for every image


def test_same_seed_same_weights_and_labels_never_needed(noisy):
    a = pretrain_encoder(noisy.X[:128], epochs=1, batch_size=64, random_state=3, progress=False)
    b = pretrain_encoder(noisy.X[:128], epochs=1, batch_size=64, random_state=3, progress=False)
    c = pretrain_encoder(noisy.X[:128], epochs=1, batch_size=64, random_state=4, progress=False)
    assert all(torch.equal(a.state[k], b.state[k]) for k in a.state)
    assert not all(torch.equal(a.state[k], c.state[k]) for k in a.state)
    assert not any("classifier.3" in k for k in a.state)  # the head is not part of it
    for key in ("method", "epochs", "batch_size", "n_images", "image_shape", "module",
                "torch", "xal_sklearn", "seconds"):
        assert key in a.info
    assert a.info["n_images"] == 128 and a.info["image_shape"] == [1, 32, 32]


def test_pools_of_every_kind(noisy, tmp_path):
    X = noisy.X[:128]
    path = tmp_path / "pool.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")

    class Images(torch.utils.data.Dataset):  # items are bare images
        def __len__(self):
            return len(X)

        def __getitem__(self, i):
            return torch.from_numpy(X[i])

    ds = Images()
    from_array = pretrain_encoder(X, epochs=1, batch_size=64, random_state=0, progress=False)
    from_mm = pretrain_encoder(mm, epochs=1, batch_size=64, random_state=0, progress=False)
    assert all(torch.equal(from_array.state[k], from_mm.state[k]) for k in from_array.state)
    from_ds = pretrain_encoder(ds, epochs=1, batch_size=64, random_state=0, progress=False)
    assert from_ds.info["n_images"] == 128


def test_save_load_round_trip_bit_for_bit(simclr, tmp_path):
    path = simclr.save(tmp_path / "pool-simclr.pt")
    back = EncoderWeights.load(path)
    assert back.state.keys() == simclr.state.keys()
    assert all(torch.equal(back.state[k], simclr.state[k]) for k in back.state)
    assert {k: v for k, v in back.info.items() if k != "source"} == simclr.info
    assert "simclr, 20 epochs on 480 images of 1x32x32" in repr(back)


SEEN = []  # the network's state at the start of every fit (outside the callback: clones)


class _StateAtTrainBegin(Callback):
    def on_train_begin(self, net, **kwargs):
        SEEN.append({k: v.detach().clone() for k, v in net.module_.state_dict().items()})


def test_every_fit_starts_from_the_weights(noisy, simclr, tmp_path):
    path = simclr.save(tmp_path / "w.pt")
    SEEN.clear()
    net = CNNClassifier(n_classes=3, max_epochs=1, init_weights=str(path), random_state=0,
                        callbacks=[_StateAtTrainBegin()])
    net.fit(noisy.X[:40], noisy.y[:40])
    net.fit(noisy.X[40:80], noisy.y[40:80])  # a second fit starts there again
    assert len(SEEN) == 2
    for state in SEEN:
        for k, v in simclr.state.items():
            assert torch.equal(state[k], v), k
    trained = net.module_.state_dict()
    assert not torch.equal(trained["features.0.weight"], simclr.state["features.0.weight"])
    # the object works as well as its file, and survives clone, pickle, GridSearchCV
    again = CNNClassifier(n_classes=3, max_epochs=1, init_weights=simclr, random_state=0)
    again.fit(noisy.X[:40], noisy.y[:40])
    np.testing.assert_allclose(again.predict_proba(noisy.X[:40]),
                               clone(net).fit(noisy.X[:40], noisy.y[:40]).predict_proba(
                                   noisy.X[:40]), atol=1e-5)
    assert clone(again).init_weights is not None
    restored = pickle.loads(pickle.dumps(again))
    np.testing.assert_array_equal(restored.predict(noisy.X[:20]), again.predict(noisy.X[:20]))
    grid = GridSearchCV(CNNClassifier(n_classes=3, max_epochs=1, init_weights=str(path),
                                      random_state=0), {"lr": [1e-3, 3e-3]}, cv=2)
    grid.fit(noisy.X[:60], noisy.y[:60])
    assert grid.best_estimator_.init_weights == str(path)


def test_learner_save_load_keeps_the_warm_start(noisy, simclr, tmp_path):
    net = CNNClassifier(n_classes=3, max_epochs=1, init_weights=simclr, random_state=0)
    learner = ActiveLearner(net, X_training=noisy.X[:30], y_training=noisy.y[:30],
                            random_state=0).fit(noisy.X[:30], noisy.y[:30])
    learner.save(tmp_path / "learner")
    back = ActiveLearner.load(tmp_path / "learner", net)
    np.testing.assert_allclose(back.predict_proba(noisy.X[30:60]),
                               learner.predict_proba(noisy.X[30:60]), atol=1e-6)


def test_another_network_is_refused_before_anything_changes(noisy, simclr, tmp_path):
    path = simclr.save(tmp_path / "w.pt")
    narrow = pretrain_encoder(noisy.X[:64], SmallCNN(n_filters=(8, 16, 32)), epochs=1,
                              batch_size=32, random_state=0, progress=False)
    narrow_path = narrow.save(tmp_path / "narrow.pt")
    net = CNNClassifier(n_classes=3, max_epochs=1, random_state=0).fit(noisy.X[:30], noisy.y[:30])
    before = net.predict_proba(noisy.X[:10])
    net.set_params(init_weights=str(narrow_path))
    with pytest.raises(EncoderMismatchError, match=r"narrow\.pt does not fit this SmallCNN: "
                                                   r"shapes differ \(features\.0\.weight: file "
                                                   r"\(8, 1, 3, 3\), network \(16, 1, 3, 3\)"):
        net.fit(noisy.X[:30], noisy.y[:30])
    np.testing.assert_array_equal(net.predict_proba(noisy.X[:10]), before)  # untouched
    rgb = CNNClassifier(n_classes=3, max_epochs=1, init_weights=str(path))
    with pytest.raises(EncoderMismatchError, match="file \\(16, 1, 3, 3\\), network \\(16, 3, 3"):
        rgb.fit(np.repeat(noisy.X[:12], 3, axis=1), noisy.y[:12])
    assert not hasattr(rgb, "module_") or not rgb.initialized_


def test_bad_files_are_named_and_nothing_is_unpickled(noisy, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("unpickled!",))

    with open(evil, "wb") as f:
        pickle.dump({"format": "xal-encoder-weights", "obj": Payload()}, f)
    for path, match in ((corrupt, "corrupt.pt is not an encoder-weights file"),
                        (foreign, "foreign.pt is not an encoder-weights file written by "
                                  "pretrain_encoder \\(no xal-encoder-weights header\\)"),
                        (evil, "evil.pt is not an encoder-weights file")):
        with pytest.raises(FormatError, match=match):
            EncoderWeights.load(path)
        with pytest.raises(FormatError, match=match):
            CNNClassifier(n_classes=3, init_weights=str(path)).fit(noisy.X[:8], noisy.y[:8])
    with pytest.raises(FileNotFoundError, match="No encoder weights at .*missing.pt"):
        CNNClassifier(n_classes=3, init_weights=str(tmp_path / "missing.pt")).fit(
            noisy.X[:8], noisy.y[:8])
    with pytest.raises(TypeError, match="init_weights must be a path"):
        CNNClassifier(n_classes=3, init_weights=42).fit(noisy.X[:8], noisy.y[:8])


class _NoLinear(nn.Module):
    def __init__(self, in_channels=1):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, 3, 3)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_bad_arguments_are_named(noisy):
    X = noisy.X[:64]
    with pytest.raises(ValueError, match="Unknown pretraining method 'moco'; choose one of "
                                         "simclr, byol"):
        pretrain_encoder(X, method="moco")
    with pytest.raises(ValueError, match="epochs must be an integer >= 1, got 0"):
        pretrain_encoder(X, epochs=0)
    with pytest.raises(ValueError, match="The pool has 64 images, fewer than one batch of 256"):
        pretrain_encoder(X, epochs=1)
    with pytest.raises(ValueError, match="has no nn.Linear layer"):
        pretrain_encoder(X, module=_NoLinear, epochs=1, batch_size=32)
    with pytest.raises(ValueError, match="2-D images"):
        pretrain_encoder(X[:, 0], epochs=1, batch_size=32)


def test_losses_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # view 0's positive (view 2) has cosine 1, its negatives cosines 0 and 0
    t = 0.5
    expected = -np.log(np.exp(1 / t) / (np.exp(1 / t) + 2 * np.exp(0)))
    assert float(nt_xent_loss(z1, z2, t)) == pytest.approx(expected, rel=1e-6)
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[2.0, 0.0], [1.0, 0.0]])
    assert float(byol_loss(p, z)) == pytest.approx(((2 - 2) + (2 - 2 / np.sqrt(2))) / 2)


def test_augmentations_keep_grey_scale_and_laterality_unless_asked(noisy):
    x = torch.zeros(64, 1, 32, 32)
    x[:, :, :, :12] = 1.0  # bright on the left
    g = torch.Generator().manual_seed(0)
    views = augment_views(x, g, noise=0, blur=None)
    assert views.shape == x.shape
    left, right = views[..., :16].mean((1, 2, 3)), views[..., 16:].mean((1, 2, 3))
    assert (left > right).all()  # no view swaps the sides
    flipped = augment_views(x, torch.Generator().manual_seed(0), flips=True, noise=0, blur=None)
    left, right = flipped[..., :16].mean((1, 2, 3)), flipped[..., 16:].mean((1, 2, 3))
    assert 10 < int((right > left).sum()) < 54
    a = augment_views(x, torch.Generator().manual_seed(5))
    b = augment_views(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


# --- experiments and the CLI -------------------------------------------------------------------

def test_run_experiment_pretrains_per_seed_on_the_pool_only(monkeypatch, tmp_path):
    import xal_sklearn.pretrain as pretrain_module
    from xal_sklearn import random_sampling
    from xal_sklearn.datasets import group_train_test_split
    from xal_sklearn.experiments import run_experiment

    data = make_lesion_phantoms(120, 32, shortcut=0.0, random_state=1)
    given, devices = [], []
    real = pretrain_module.pretrain_encoder

    @functools.wraps(real)
    def spy(X, **kwargs):
        given.append((np.array(X), kwargs["random_state"]))
        devices.append(kwargs.get("device"))
        return real(X, **kwargs)

    monkeypatch.setattr(pretrain_module, "pretrain_encoder", spy)
    SEEN.clear()
    net = CNNClassifier(n_classes=3, max_epochs=1, callbacks=[_StateAtTrainBegin()])
    kwargs = dict(initial_size=20, query_size=10, budget=30, seeds=[0, 1], out_dir=tmp_path,
                  progress=False, pretrain={"method": "byol", "epochs": 1, "batch_size": 32})
    run_experiment(net, data, {"random": random_sampling}, **kwargs)
    assert [seed for _, seed in given] == [0, 1]
    assert devices == ["cpu", "cpu"]  # the estimator's, not pretrain_encoder's "auto"
    for X_given, seed in given:
        train, test = group_train_test_split(data.groups, 0.2, random_state=seed)
        np.testing.assert_array_equal(X_given, data.X[train])  # the pool, and only it
        flat = {x.tobytes() for x in X_given}
        assert not any(x.tobytes() in flat for x in data.X[test])
    weights = {s: EncoderWeights.load(tmp_path / "pretrain" / f"seed{s}.pt") for s in (0, 1)}
    # every fit of every round (2 per run: the initial set and one query) starts there
    assert len(SEEN) == 4
    for state, seed in zip(SEEN, (0, 0, 1, 1)):
        assert all(torch.equal(state[k], v) for k, v in weights[seed].state.items())
    import json
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["pretrain"] == {"batch_size": 32, "epochs": 1, "method": "byol"}
    # resumed: the weights are reused, not made again
    given.clear()
    run_experiment(net, data, {"random": random_sampling}, **kwargs)
    assert given == []
    # weights that other settings made are refused, naming the file, never reused unnoticed
    from xal_sklearn.experiments import ResultsFolderError

    other = tmp_path / "other"
    shutil.copytree(tmp_path / "pretrain", other / "pretrain")
    longer = dict(kwargs, out_dir=other, pretrain=dict(kwargs["pretrain"], epochs=2))
    with pytest.raises(ResultsFolderError, match=r"seed0\.pt holds a warm start made with other "
                       r"settings or another pool: epochs 1 \(this run: 2\)\. Delete"):
        run_experiment(net, data, {"random": random_sampling}, **longer)
    assert given == [] and sorted(p.name for p in other.iterdir()) == ["pretrain"]
    with pytest.raises(ResultsFolderError, match=r"image_shape \[1, 32, 32\] \(this run: "
                       r"\[1, 24, 24\]\)"):
        run_experiment(net, dict(data, X=data.X[..., :24, :24],
                                 roi_masks=data.roi_masks[..., :24, :24]),
                       {"random": random_sampling}, **dict(kwargs, out_dir=other))
    # force=True discards the old settings' warm starts with their results
    run_experiment(net, data, {"random": random_sampling}, **dict(longer, out_dir=tmp_path),
                   force=True)
    assert [seed for _, seed in given] == [0, 1]
    assert EncoderWeights.load(tmp_path / "pretrain" / "seed1.pt").info["epochs"] == 2
    with pytest.raises(ValueError, match="fewer than one pretraining batch of 256"):
        run_experiment(net, data, {"random": random_sampling}, seeds=[0], initial_size=20,
                       query_size=10, budget=30, pretrain={"epochs": 1})
    with pytest.raises(ValueError, match="Unknown pretraining method 'moco'"):
        run_experiment(net, data, {"random": random_sampling}, pretrain={"method": "moco"})
    with pytest.raises(ValueError, match=r"pretrain has argument\(s\) \['epoch'\]"):
        run_experiment(net, data, {"random": random_sampling}, pretrain={"epoch": 3})


def test_cli_pretrain(tmp_path, capsys):
    from xal_sklearn.cli import main

    out = tmp_path / "run"
    assert main(["run", "--strategies", "random", "--n-samples", "300", "--initial", "20",
                 "--query-size", "10", "--budget", "30", "--epochs", "1", "--seeds", "1",
                 "--pretrain", "simclr", "--pretrain-epochs", "1", "--out", str(out),
                 "--no-progress"]) in (0, None)
    said = capsys.readouterr().out
    assert "from a simclr warm start (1 epochs per seed), each head started from a linear " \
        "probe" in said
    config = json.loads((out / "config.json").read_text())
    assert config["template"]["head_init"] == "probe"
    plain = tmp_path / "plain"
    assert main(["run", "--strategies", "random", "--n-samples", "300", "--initial", "20",
                 "--query-size", "10", "--budget", "20", "--epochs", "1", "--seeds", "1",
                 "--pretrain", "simclr", "--pretrain-epochs", "1", "--head-init", "random",
                 "--out", str(plain), "--no-progress"]) in (0, None)
    assert "linear probe" not in capsys.readouterr().out
    assert json.loads((plain / "config.json").read_text())["template"]["head_init"] == "random"
    assert EncoderWeights.load(out / "pretrain" / "seed0.pt").info["epochs"] == 1
    shutil.copytree(out / "pretrain", tmp_path / "kept" / "pretrain")
    with pytest.raises(SystemExit) as info:
        main(["run", "--strategies", "random", "--n-samples", "300", "--initial", "20",
              "--query-size", "10", "--budget", "20", "--epochs", "1", "--seeds", "1",
              "--pretrain", "simclr", "--pretrain-epochs", "2", "--out", str(tmp_path / "kept"),
              "--no-progress"])
    assert info.value.code == 2
    assert "seed0.pt was pretrained with epochs 1 (this run: 2)); choose another --out, or add " \
        "--force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", "--pretrain", "moco", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'moco'" in capsys.readouterr().err
