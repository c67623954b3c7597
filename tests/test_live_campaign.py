"""The campaign as a Label Studio ML backend (issue 41): journal, retraining, requests.

These drive :class:`Backend` directly and through a real socket; the loop with a real
Label Studio server is in test_campaign.py.
"""

import base64
import http.client
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import write_scan_folder
from xal_sklearn.campaign import Backend, Campaign, CampaignError, make_server
from xal_sklearn.campaign._connect import task_data

CLASSES = ["glioma", "meningioma", "pituitary"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    from xal_sklearn.datasets import make_lesion_phantoms

    d = make_lesion_phantoms(30, 32, shortcut=0.0, random_state=1)
    root = tmp_path_factory.mktemp("live-scans")
    write_scan_folder(d, root, masks=False)
    return root, {i: (CLASSES[d.y[i]], d.roi_masks[i]) for i in range(30)}


def _campaign(tmp_path, scans, **kw):
    root, _ = scans
    return Campaign.create(tmp_path / "study", root, CLASSES, manifest=root / "manifest.csv",
                           image_size=32, epochs=2, **kw)


def _task(campaign, xal_id):
    return {"id": 1000 + xal_id, "data": task_data(campaign, xal_id)}


def _annotation(truth, xal_id, ann_id=None, label=None, box=True):
    true_label, mask = truth[xal_id]
    result = [{"from_name": "label", "to_name": "image", "type": "choices",
               "value": {"choices": [label or true_label]}}]
    if box:
        ys, xs = np.nonzero(mask)
        result.append({"from_name": "roi_box", "to_name": "image", "type": "rectanglelabels",
                       "original_width": 32, "original_height": 32,
                       "value": {"x": 100 * xs.min() / 32, "y": 100 * ys.min() / 32,
                                 "width": 100 * (xs.max() + 1 - xs.min()) / 32,
                                 "height": 100 * (ys.max() + 1 - ys.min()) / 32,
                                 "rotation": 0, "rectanglelabels": ["ROI"]}})
    return {"id": ann_id if ann_id is not None else 5000 + xal_id, "result": result,
            "completed_by": 1, "was_cancelled": False,
            "updated_at": "2026-12-06T10:00:00Z"}


def _post(backend, path, body, headers=None):
    return backend.handle("POST", path, headers or {}, json.dumps(body).encode())


def _label(backend, campaign, truth, xal_id, **kw):
    return _post(backend, "/webhook", {"action": "ANNOTATION_CREATED",
                                       "task": _task(campaign, xal_id),
                                       "annotation": _annotation(truth, xal_id, **kw)})


def _predict(backend, campaign, ids):
    status, answer = _post(backend, "/predict", {"tasks": [_task(campaign, i) for i in ids]})
    assert status == 200, answer
    return answer


def test_predictions_are_ordered_by_the_strategy_and_refresh_after_training(tmp_path, scans):
    c = _campaign(tmp_path, scans)
    backend = Backend(c.folder, retrain_every=6, log=lambda line: None)
    ids = list(range(30))
    before = _predict(backend, c, ids)
    assert before["model_version"] == "xal round 0"
    assert all(r["result"] == [] for r in before["results"])  # no model: nothing to say
    # the order of a seeded random permutation, as scores 0, 1/30, 2/30 ...
    assert sorted(r["score"] for r in before["results"]) == [k / 30 for k in range(30)]
    first = sorted(ids, key=lambda i: before["results"][i]["score"])[:6]
    for k, xal_id in enumerate(first):
        status, answer = _label(backend, c, scans[1], xal_id)
        assert status == 200, answer
        assert answer["training"] is (k == 5)  # the sixth label starts a training
    backend.wait(120)
    health = backend.health()
    assert health["model_version"] == "xal round 1" and health["n_labelled"] == 6
    assert not health["training"] and health["last_error"] is None
    after = _predict(backend, c, ids)
    assert after["model_version"] == "xal round 1"
    scores = {i: r["score"] for i, r in zip(ids, after["results"])}
    assert all(scores[i] == 1.0 for i in first)  # labelled: last
    rest = sorted((i for i in ids if i not in first), key=scores.get)
    assert rest == backend.ranking.order  # ascending score = the strategy's order
    assert [scores[i] for i in rest] == [k / 24 for k in range(24)]
    result = after["results"][rest[0]]["result"]
    assert result[0]["type"] == "choices" and result[0]["value"]["choices"][0] in CLASSES
    assert result[1]["type"] == "rectanglelabels" and result[1]["original_width"] == 32
    # the files are the truth: a fresh Campaign sees the labels, their ROIs and the round
    reopened = Campaign.open(c.folder)
    assert {e["id"] for e in reopened.state["labelled"]} == set(first)
    assert all(e["roi"] and e["batch"] == 0 for e in reopened.state["labelled"])
    assert reopened.status()["rounds"] == 1 and reopened.status()["n_waiting"] == 0
    assert "Live labels" not in reopened.summary()
    # ... and the file route goes on from there, never handing out a labelled image
    batch = reopened.query(5)
    assert not set(batch["ids"]) & set(first)


def test_updates_and_deletions_reach_the_labelled_set(tmp_path, scans):
    c = _campaign(tmp_path, scans)
    backend = Backend(c.folder, retrain_every=100, log=lambda line: None)
    for xal_id in range(4):
        assert _label(backend, c, scans[1], xal_id)[0] == 200
    wrong = [cl for cl in CLASSES if cl != scans[1][0][0]][0]
    status, _ = _post(backend, "/webhook", {"action": "ANNOTATION_UPDATED",
                                           "task": _task(c, 0),
                                           "annotation": _annotation(scans[1], 0, label=wrong)})
    assert status == 200
    status, answer = _post(backend, "/webhook", {"action": "ANNOTATIONS_DELETED",
                                                "annotations": [{"id": 5001}]})
    assert status == 200 and answer["training"] is False
    assert backend.health()["n_waiting"] == 4  # 0 (updated), 1 (deleted), 2, 3
    assert "Live labels: 4 change(s) from Label Studio wait" in Campaign.open(c.folder).summary()
    assert _post(backend, "/webhook", {"action": "START_TRAINING"})[1]["training"] is True
    backend.wait(120)
    labelled = {e["id"]: e["label"] for e in Campaign.open(c.folder).state["labelled"]}
    assert labelled == {0: wrong, 2: scans[1][2][0], 3: scans[1][3][0]}
    # a label deleted after training leaves the labelled set at the next one
    _post(backend, "/webhook", {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5002}]})
    _post(backend, "/webhook", {"action": "START_TRAINING"})
    backend.wait(120)
    opened = Campaign.open(c.folder)
    assert {e["id"] for e in opened.state["labelled"]} == {0, 3}
    with np.load(c.folder / "state" / "rois.npz") as f:
        assert len(f["masks"]) == 2


@pytest.mark.parametrize("body, words", [
    (b"{not json", "not JSON"),
    (json.dumps({"tasks": "all"}).encode(), "no list of tasks"),
])
def test_malformed_bodies_are_refused(tmp_path, scans, body, words):
    c = _campaign(tmp_path, scans)
    backend = Backend(c.folder, log=lambda line: None)
    status, answer = backend.handle("POST", "/predict", {}, body)
    assert status == 400 and words in answer["error"]


def test_requests_outside_the_pool_change_nothing(tmp_path, scans):
    c = _campaign(tmp_path, scans)
    backend = Backend(c.folder, log=lambda line: None)
    _label(backend, c, scans[1], 3)
    journal = (c.folder / "live" / "journal.json").read_text()
    outside = {"id": 1, "data": dict(task_data(c, 0), image="/data/local-files/?d=etc/passwd")}
    status, answer = _post(backend, "/predict", {"tasks": [outside]})
    assert status == 400 and "is not pool image 0" in answer["error"]
    status, answer = _post(backend, "/webhook", {"action": "ANNOTATION_CREATED", "task": outside,
                                                "annotation": _annotation(scans[1], 0)})
    assert status == 400 and "is not pool image 0" in answer["error"]
    unknown = {"id": 2, "data": dict(task_data(c, 0), xal_id=999)}
    status, answer = _post(backend, "/predict", {"tasks": [unknown]})
    assert status == 400 and "image id 999 is not in the pool" in answer["error"]
    status, answer = _label(backend, c, scans[1], 4, label="glioma ")
    assert status == 400 and "did you mean 'glioma'" in answer["error"]
    foreign = {"id": 3, "data": {"image": "x.png"}}
    status, answer = _post(backend, "/webhook", {"action": "ANNOTATION_CREATED", "task": foreign,
                                                "annotation": _annotation(scans[1], 0)})
    assert status == 400 and "not made by this campaign" in answer["error"]
    assert (c.folder / "live" / "journal.json").read_text() == journal
    assert backend.handle("GET", "/nothing", {}, b"")[0] == 404
    assert backend.handle("GET", "/predict", {}, b"")[0] == 405


def test_a_token_is_required_when_given(tmp_path, scans):
    c = _campaign(tmp_path, scans)
    backend = Backend(c.folder, token="s3cret", log=lambda line: None)
    assert backend.handle("GET", "/health", {}, b"")[0] == 401
    assert backend.handle("GET", "/health", {"Authorization": "Bearer wrong"}, b"")[0] == 401
    assert backend.handle("GET", "/health", {"Authorization": "Bearer s3cret"}, b"")[0] == 200
    basic = base64.b64encode(b"xal:s3cret").decode()
    assert backend.handle("GET", "/health", {"Authorization": f"Basic {basic}"}, b"")[0] == 200
    with pytest.raises(CampaignError, match="give a token"):
        make_server(Backend(c.folder, log=lambda line: None), host="0.0.0.0", port=0)


def test_over_a_socket_with_a_body_limit(tmp_path, scans):
    c = _campaign(tmp_path, scans)
    backend = Backend(c.folder, log=lambda line: None)
    server = make_server(backend, port=0, max_body=10_000)
    assert server.server_address[0] == "127.0.0.1"  # the loopback unless told otherwise
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)
        conn.request("GET", "/health")
        answer = conn.getresponse()
        assert answer.status == 200 and json.loads(answer.read())["model_version"] == \
            "xal round 0"
        conn.request("POST", "/predict", body=b"x" * 20_000,
                     headers={"Content-Type": "application/json"})
        answer = conn.getresponse()
        assert answer.status == 413 and "limit is 10000" in json.loads(answer.read())["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_a_failed_training_leaves_the_last_model_serving(tmp_path, scans, monkeypatch):
    c = _campaign(tmp_path, scans)
    backend = Backend(c.folder, retrain_every=1, log=lambda line: None)
    import xal_sklearn.campaign._serve as serve_module

    def broken(campaign, lock=None):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(serve_module, "retrain", broken)
    _label(backend, c, scans[1], 0)
    backend.wait(60)
    health = backend.health()
    assert health["last_error"] == "RuntimeError: out of memory"
    assert health["model_version"] == "xal round 0" and health["n_waiting"] == 1
    assert _predict(backend, c, [0, 1])["model_version"] == "xal round 0"


def test_a_second_process_is_refused(tmp_path, scans):
    c = _campaign(tmp_path, scans)
    code = ("import sys, time; from xal_sklearn.campaign._lock import hold\n"
            "with hold(sys.argv[1], 'xal campaign serve on 127.0.0.1:9090'):\n"
            "    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(c.folder)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(CampaignError, match=rf"in use by another xal process \(pid "
                                                rf"{proc.pid}, xal campaign serve on "):
            Campaign.open(c.folder).query(3)
        assert not (c.folder / "batches").exists()
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.1)
    assert len(Campaign.open(c.folder).query(3)["ids"]) == 3  # the lock ended with it


def test_file_import_waits_for_live_labels(tmp_path, scans):
    c = _campaign(tmp_path, scans)
    c.query(4)
    backend = Backend(c.folder, retrain_every=100, log=lambda line: None)
    _label(backend, c, scans[1], 20)
    with pytest.raises(CampaignError, match="run `xal campaign retrain FOLDER`"):
        Campaign.open(c.folder).import_labels(tmp_path / "any.json")
    r = Campaign.open(c.folder).retrain()
    assert r["n_labelled"] == 1 and r["round"] == 1
    assert Campaign.open(c.folder).retrain() is None


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_line_serves_and_holds_the_folder(tmp_path, scans):
    import os
    import signal
    import urllib.request

    from xal_sklearn.cli import main

    c = _campaign(tmp_path, scans)
    assert main(["campaign", "serve", str(c.folder), "--host", "0.0.0.0"]) == 2
    assert main(["campaign", "retrain", str(c.folder)]) == 0
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "LABEL_STUDIO_API_KEY"}
    proc = subprocess.Popen([sys.executable, "-m", "xal_sklearn.cli", "campaign", "serve",
                             str(c.folder), "--port", str(port), "--retrain-every", "2"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    assert json.loads(r.read())["retrain_every"] == 2
                    break
            except OSError:
                assert proc.poll() is None and time.time() < deadline
                time.sleep(0.3)
        with pytest.raises(CampaignError, match=rf"pid {proc.pid}, xal campaign serve on "
                                                rf"127.0.0.1:{port}"):
            Campaign.open(c.folder).query(2)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "without $LABEL_STUDIO_API_KEY" in err and "the backend stopped" in err
    assert len(Campaign.open(c.folder).query(2)["ids"]) == 2


def test_connect_refuses_before_changing_anything(tmp_path, scans, monkeypatch, capsys):
    from xal_sklearn.campaign import connect
    from xal_sklearn.cli import main

    c = _campaign(tmp_path, scans)
    monkeypatch.delenv("LABEL_STUDIO_API_KEY", raising=False)
    with pytest.raises(SystemExit) as refused:
        main(["campaign", "connect", str(c.folder), "--label-studio", "http://127.0.0.1:9"])
    assert refused.value.code == 2
    assert "--api-key (or $LABEL_STUDIO_API_KEY) is needed" in capsys.readouterr().err
    with pytest.raises(CampaignError, match=r"backend does not answer at http://127.0.0.1:\d+ "
                                            r".*start it first: xal campaign serve"):
        connect(c, "http://127.0.0.1:9", "key", f"http://127.0.0.1:{_free_port()}")
    assert not (c.folder / "labelstudio.json").exists()


def test_connect_says_when_label_studio_does_not_answer(tmp_path, scans):
    from xal_sklearn.campaign import connect

    c = _campaign(tmp_path, scans)
    server = make_server(Backend(c.folder, log=lambda line: None), port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(CampaignError, match=r"Label Studio does not answer at "
                                                r"http://127.0.0.1:\d+ \("):
            connect(c, f"http://127.0.0.1:{_free_port()}", "key",
                    f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
    assert not (c.folder / "labelstudio.json").exists()


def test_a_taken_port_is_said(tmp_path, scans):
    import socket

    c = _campaign(tmp_path, scans)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        with pytest.raises(CampaignError, match=r"Cannot listen on 127.0.0.1:\d+ .*another "
                                                r"--port"):
            make_server(Backend(c.folder, log=lambda line: None), port=s.getsockname()[1])


def test_webhooks_while_training_lose_no_label(tmp_path, scans):
    """Twenty annotators' webhooks at once, trainings starting and ending among them:
    every label ends in the labelled set, each once, and the journal is empty after."""
    from concurrent.futures import ThreadPoolExecutor

    c = _campaign(tmp_path, scans)
    backend = Backend(c.folder, retrain_every=4, log=lambda line: None)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda i: _label(backend, c, scans[1], i), range(20)))
    assert all(status == 200 for status, _ in answers), answers
    backend.wait(180)
    _post(backend, "/webhook", {"action": "START_TRAINING"})
    backend.wait(180)
    state = Campaign.open(c.folder).state
    assert sorted(e["id"] for e in state["labelled"]) == list(range(20))
    assert backend.health()["n_waiting"] == 0 and backend.health()["last_error"] is None
    with np.load(c.folder / "state" / "rois.npz") as f:
        assert len(f["masks"]) == 20 and f["masks"].reshape(20, -1).any(1).all()
