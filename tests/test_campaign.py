"""Labelling campaigns: query batches, Label Studio tasks, imports (CSV, JSON, a real server)."""

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_scan_folder
from xal_sklearn import CNNClassifier
from xal_sklearn.campaign import Campaign, CampaignError
from xal_sklearn.labelstudio import AnnotationImportError, LabelStudioClient, label_config

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["glioma", "meningioma", "pituitary"]


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """24 small scans with lesion masks, three classes, and the truth kept aside."""
    from xal_sklearn.datasets import make_lesion_phantoms

    d = make_lesion_phantoms(24, 32, shortcut=0.0, random_state=0)
    root = tmp_path_factory.mktemp("scans")
    images = write_scan_folder(d, root)
    return root, {name: (CLASSES[d.y[i]], d.roi_masks[i]) for i, name in enumerate(images)}


def _new(tmp_path, scans, **kw):
    root, _ = scans
    return Campaign.create(tmp_path / "study", root, CLASSES, manifest=root / "manifest.csv",
                           image_size=32, epochs=2, document_root=tmp_path, **kw)


def _fill_csv(campaign, batch, truth, path, boxes=True):
    meta = json.loads((campaign.folder / "batches" / f"{batch:03d}" / "batch.json").read_text())
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["xal_id", "image", "label", "x_min", "y_min", "x_max", "y_max"])
        for img in meta["images"]:
            label, mask = truth[img["image"]]
            ys, xs = np.nonzero(mask)
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if boxes else [""] * 4
            w.writerow([img["id"], img["image"], label, *box])
    return meta


def test_round_trip_with_the_csv(tmp_path, scans):
    c = _new(tmp_path, scans)
    first = c.query(6)
    assert first["method"].startswith("random sample") and len(first["ids"]) == 6
    batch = c.folder / "batches" / "001"
    assert sorted(p.name for p in batch.iterdir()) == [
        "batch.json", "images", "label_config.xml", "overlays", "tasks.json", "to_label.csv"]
    # a second query before the import does not hand out the same images
    second = c.query(6)
    assert not set(first["ids"]) & set(second["ids"])
    _fill_csv(c, 1, scans[1], tmp_path / "a.csv")
    result = Campaign.open(c.folder).import_labels(tmp_path / "a.csv")
    assert result["n_imported"] == 6 and result["n_with_roi"] == 6
    again = Campaign.open(c.folder)
    assert again.status()["n_labelled"] == 6 and again.status()["pending"] == {2: 6}
    third = again.query(5)
    assert "dual-criterion" in third["method"]
    assert not set(third["ids"]) & (set(first["ids"]) | set(second["ids"]))
    tasks = json.loads((again.folder / "batches" / "003" / "tasks.json").read_text())
    pred = tasks[0]["predictions"][0]
    assert pred["result"][0]["value"]["choices"][0] in CLASSES
    assert 0 <= pred["result"][0]["score"] <= 1 and pred["score"] >= 0
    assert Image.open(again.folder / "batches" / "003" / "overlays" /
                      f"{third['ids'][0]:06d}.png").size[0] > 100
    assert "Waiting for labels: batch 002 (6 images), batch 003 (5 images)" in again.summary()


def _export(campaign, batch, truth, mutate=None):
    """A Label Studio style export of a batch, answered from the truth with rectangles."""
    meta = json.loads((campaign.folder / "batches" / f"{batch:03d}" / "batch.json").read_text())
    tasks = []
    for k, img in enumerate(meta["images"]):
        label, mask = truth[img["image"]]
        ys, xs = np.nonzero(mask)
        w, h = img["width"], img["height"]
        box = {"x": 100 * xs.min() / w, "y": 100 * ys.min() / h,
               "width": 100 * (xs.max() + 1 - xs.min()) / w,
               "height": 100 * (ys.max() + 1 - ys.min()) / h, "rotation": 0,
               "rectanglelabels": ["ROI"]}
        tasks.append({"id": 100 + k, "data": {"image": img["image_url"], "xal_id": img["id"]},
                      "annotations": [{"id": k, "completed_by": {"email": "rad@example.org"},
                                       "was_cancelled": False,
                                       "updated_at": "2026-11-26T10:00:00Z", "result": [
                                           {"type": "choices", "from_name": "label",
                                            "to_name": "image", "value": {"choices": [label]}},
                                           {"type": "rectanglelabels", "from_name": "roi_box",
                                            "to_name": "image", "original_width": w,
                                            "original_height": h, "value": box}]}]})
    if mutate:
        mutate(tasks)
    return tasks


def _set(path, value):
    def mutate(tasks):
        target = tasks[0]
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


@pytest.mark.parametrize("mutate, message", [
    (_set(["data", "xal_id"], 9999), "task 100: image id 9999 is not in the pending batch 001"),
    (_set(["data", "image"], "/data/local-files/?d=etc/passwd"), "task 100: its image"),
    (lambda t: t[0]["annotations"][0]["result"][0]["value"].update(choices=["tumour"]),
     "task 100: unknown label 'tumour'"),
    (lambda t: t[0]["annotations"][0]["result"][1].update(original_width=999),
     "task 100: a rectanglelabels region was drawn on a 999x32 image but the image is 32x32"),
    (lambda t: t[0]["annotations"].append(dict(t[0]["annotations"][0], result=[
        {"type": "choices", "value": {"choices": ["glioma" if "glioma" not in json.dumps(
            t[0]) else "pituitary"]}}])), "task 100: its annotations disagree"),
    (lambda t: t[1]["annotations"][0]["result"].append(
        {"type": "brushlabels", "original_width": 32, "original_height": 32,
         "value": {"format": "rle", "rle": [255, 255, 255, 255, 0, 1, 2]}}),
     "task 101: brush RLE holds 4294967295 values"),
    (lambda t: t[1]["annotations"][0]["result"].append(
        {"type": "brushlabels", "original_width": 32, "original_height": 32,
         "value": {"format": "rle", "rle": "AAAA"}}), "task 101: brush 'rle' must be a list"),
    (lambda t: t.clear(), "The export holds no tasks"),
])
def test_untrusted_exports_are_refused_whole(tmp_path, scans, mutate, message):
    c = _new(tmp_path, scans)
    c.query(4)
    before = (c.folder / "state" / "state.json").read_text()
    export = tmp_path / "export.json"
    export.write_text(json.dumps(_export(c, 1, scans[1], mutate)))
    with pytest.raises(AnnotationImportError, match=re.escape(message)):
        Campaign.open(c.folder).import_labels(export)
    assert (c.folder / "state" / "state.json").read_text() == before  # nothing imported


def test_json_export_with_a_brush_a_box_and_no_region(tmp_path, scans):
    from label_studio_brush_rle_rs import encode_rle

    c = _new(tmp_path, scans)
    c.query(3)
    tasks = _export(c, 1, scans[1])
    brush = np.zeros((32, 32), np.uint8)
    brush[5:9, 10:20] = 255
    rle = list(encode_rle(np.repeat(brush.ravel(), 4), 8, [3, 4, 8, 16]))
    tasks[0]["annotations"][0]["result"][1] = {
        "type": "brushlabels", "from_name": "roi_brush", "to_name": "image",
        "original_width": 32, "original_height": 32,
        "value": {"format": "rle", "rle": rle, "brushlabels": ["ROI"]}}
    del tasks[2]["annotations"][0]["result"][1]  # a class, no region
    export = tmp_path / "export.json"
    export.write_text(json.dumps(tasks))
    result = c.import_labels(export)
    # the task without a region takes the manifest's mask of its image
    assert result["n_imported"] == 3 and result["n_with_roi"] == 3
    assert result["n_roi_from_manifest"] == 1
    state = json.loads((c.folder / "state" / "state.json").read_text())
    assert [e["roi"] for e in state["labelled"]] == [True, True, True]
    assert [e.get("roi_from") for e in state["labelled"]] == [None, None, "manifest"]
    assert state["labelled"][0]["annotator"] == "rad@example.org"
    third = c._dataset([state["labelled"][2]["id"]]).mask(0)
    with np.load(c.folder / "state" / "rois.npz") as f:
        np.testing.assert_array_equal(f["masks"][0], brush > 0)
        np.testing.assert_array_equal(f["masks"][2], third)


def test_refusals(tmp_path, scans):
    root, _ = scans
    with pytest.raises(CampaignError, match="2 or more distinct"):
        Campaign.create(tmp_path / "s", root, ["a"])
    c = _new(tmp_path, scans)
    with pytest.raises(CampaignError, match="already holds a campaign"):
        _new(tmp_path, scans)
    with pytest.raises(CampaignError, match="No batch is waiting"):
        c.import_labels(tmp_path / "x.json")
    config = json.loads((c.folder / "campaign.json").read_text())
    (c.folder / "campaign.json").write_text(json.dumps(dict(config, version=7)))
    with pytest.raises(ValueError, match="format version 7"):
        Campaign.open(c.folder)
    bad = tmp_path / "bad.csv"
    bad.write_text("image,mask\n../../etc/passwd,\n")
    with pytest.raises(CampaignError, match="is not a file inside"):
        Campaign.create(tmp_path / "t", root, CLASSES, manifest=bad)


def test_kill_9_during_import_leaves_the_old_or_the_new_state(tmp_path, scans):
    c = _new(tmp_path, scans)
    c.query(8)
    _fill_csv(c, 1, scans[1], tmp_path / "a.csv")
    before = (c.folder / "state" / "state.json").read_text()
    code = ("import sys; from xal_sklearn.campaign import Campaign; "
            "Campaign.open(sys.argv[1]).import_labels(sys.argv[2])")
    states = set()
    for delay in (0.5, 1.5, 2.5):
        proc = subprocess.Popen([sys.executable, "-c", code, str(c.folder), str(tmp_path / "a.csv")])
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        opened = Campaign.open(c.folder)  # always a complete state
        states.add(opened.status()["n_labelled"])
        if opened.status()["n_labelled"]:
            assert opened.learner() is not None
            break
        assert (c.folder / "state" / "state.json").read_text() == before
    assert states <= {0, 8}


# --- a real Label Studio server ---------------------------------------------------------

def _label_studio():
    exe = os.environ.get("XAL_LABEL_STUDIO") or str(ROOT / ".ls-venv" / "bin" / "label-studio")
    return exe if Path(exe).is_file() else None


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    exe = _label_studio()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Label Studio is not installed; .ci/run installs it into .ls-venv.")
        pytest.skip("Label Studio not installed (python3 -m venv .ls-venv && "
                    ".ls-venv/bin/pip install label-studio==1.23.2 'sentry-sdk<3')")
    data = tmp_path_factory.mktemp("ls-data")
    port = _free_port()
    # the last two let Label Studio call an ML backend and webhooks on this machine
    env = dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(data),
               LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
               LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="/", ML_BLOCK_LOCAL_IP="false",
               SSRF_PROTECTION_ENABLED="false")
    email, password = "radiologist@example.org", "xal-Passw0rd-1"
    log = open(data / "server.log", "w")
    start = time.time()
    proc = subprocess.Popen([exe, "start", "--no-browser", "--port", str(port), "--host",
                             "127.0.0.1", "--data-dir", str(data), "--username", email,
                             "--password", password], stdout=log, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        while time.time() - start < 300:
            if proc.poll() is not None:
                pytest.fail(f"Label Studio exited: {(data / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("Label Studio did not answer /health within 300 s.")
        print(f"\nLabel Studio answered /health after {time.time() - start:.0f} s")
        yield LabelStudioClient(base, email, password)
    finally:
        try:  # its group may be gone already (a server that exited on start-up)
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.mark.slow
def test_a_round_through_a_real_label_studio(tmp_path, scans, label_studio):
    from label_studio_brush_rle_rs import encode_rle

    api = label_studio
    c = _new(tmp_path, scans)
    c.query(6)
    _fill_csv(c, 1, scans[1], tmp_path / "a.csv")
    c.import_labels(tmp_path / "a.csv")  # a first model, so the next batch has predictions
    batch = c.query(4)
    folder = batch["folder"]
    project = api.create_project("xal batch 002", (folder / "label_config.xml").read_text())
    imported = api.import_tasks(project, json.loads((folder / "tasks.json").read_text()))
    assert imported["task_count"] == 4 and imported["prediction_count"] == 4
    tasks = api.tasks(project)
    meta = {img["id"]: img for img in json.loads((folder / "batch.json").read_text())["images"]}
    for k, task in enumerate(tasks):
        img = meta[task["data"]["xal_id"]]
        label, mask = scans[1][img["image"]]
        result = [{"from_name": "label", "to_name": "image", "type": "choices",
                   "value": {"choices": [label]}}]
        ys, xs = np.nonzero(mask)
        if k == 0:  # a rectangle, as the expert would drag it
            result.append({"from_name": "roi_box", "to_name": "image", "type": "rectanglelabels",
                           "original_width": 32, "original_height": 32, "image_rotation": 0,
                           "value": {"x": 100 * xs.min() / 32, "y": 100 * ys.min() / 32,
                                     "width": 100 * (xs.max() + 1 - xs.min()) / 32,
                                     "height": 100 * (ys.max() + 1 - ys.min()) / 32,
                                     "rotation": 0, "rectanglelabels": ["ROI"]}})
        elif k == 1:  # brush strokes over the lesion
            rle = encode_rle(np.repeat(mask.astype(np.uint8).ravel() * 255, 4), 8, [3, 4, 8, 16])
            result.append({"from_name": "roi_brush", "to_name": "image", "type": "brushlabels",
                           "original_width": 32, "original_height": 32, "image_rotation": 0,
                           "value": {"format": "rle", "rle": list(rle),
                                     "brushlabels": ["ROI"]}})
        api.annotate(task["id"], result)
    export = api.export(project)
    (tmp_path / "export.json").write_text(json.dumps(export))
    reopened = Campaign.open(c.folder)
    result = reopened.import_labels(tmp_path / "export.json")
    # two drawn in Label Studio, two carried from the manifest (no region drawn there)
    assert result["n_imported"] == 4 and result["n_with_roi"] == 4
    assert result["n_roi_from_manifest"] == 2
    status = Campaign.open(c.folder).status()
    assert status["n_labelled"] == 10 and status["rounds"] == 2 and status["pending"] == {}
    with np.load(c.folder / "state" / "rois.npz") as f:
        brushed = [e["id"] for e in json.loads((c.folder / "state" / "state.json").read_text())[
            "labelled"]].index(tasks[1]["data"]["xal_id"])
        np.testing.assert_array_equal(f["masks"][brushed],
                                      scans[1][meta[tasks[1]["data"]["xal_id"]]["image"]][1])
    nxt = Campaign.open(c.folder).query(4)  # the retrained model ranks what is left
    labelled = {e["id"] for e in json.loads(
        (c.folder / "state" / "state.json").read_text())["labelled"]}
    assert not set(nxt["ids"]) & labelled


def _as_a_browser(base, path):
    """GET ``path`` with the session of a logged-in user, as the annotator's browser does."""
    import http.cookiejar
    import urllib.parse

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(f"{base}/user/login/").read()
    token = next(c.value for c in jar if c.name == "csrftoken")
    opener.open(urllib.request.Request(f"{base}/user/login/", data=urllib.parse.urlencode({
        "csrfmiddlewaretoken": token, "email": "radiologist@example.org",
        "password": "xal-Passw0rd-1"}).encode(), headers={"Referer": f"{base}/user/login/"}))
    with opener.open(base + path) as r:
        return r.read()


def _scores(api, project):
    """``{xal_id: (prediction score, model version)}`` of the project's tasks as the Data
    Manager shows them (the score of the project's current model version)."""
    page = api.request("GET", f"/api/tasks?project={project}&page_size=1000&fields=all")
    return {t["data"]["xal_id"]: t.get("predictions_score") for t in page["tasks"]}


@pytest.mark.slow
def test_the_live_loop_through_a_real_label_studio(tmp_path, scans, label_studio):
    """serve + connect, then an annotator labels through Label Studio's API: the labels
    reach the campaign by webhook, it retrains after N, Label Studio's scores refresh in
    the strategy's order, a deleted annotation leaves the labelled set (issue 41)."""
    import threading

    from xal_sklearn.campaign import Backend, connect, make_server, read_connection

    api = label_studio
    root, truth = scans
    c = Campaign.create(tmp_path / "live", root, CLASSES, manifest=root / "manifest.csv",
                        image_size=32, epochs=2)
    log = []
    backend = Backend(c.folder, retrain_every=3, token="t0ken", log=log.append,
                      label_studio=lambda version, predict: api.push_predictions(
                          read_connection(c.folder)["project"], version, predict,
                          replaces="xal round "))
    server = make_server(backend, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:  # no token: refused
            urllib.request.urlopen(f"{url}/health", timeout=10)
        assert refused.value.code == 401
        r = connect(c, api.url, api.token, url, token="t0ken")
        project = r["project"]
        assert r["n_tasks"] == 24 and r["model_version"] == "xal round 0"
        assert any("imported 24 pool images" in a for a in r["actions"])
        assert any("registered the ML backend" in a for a in r["actions"])
        assert any("show the pool's files" in a for a in r["actions"])
        assert connect(c, api.url, api.token, url, token="t0ken")["actions"] == []  # idempotent
        info = api.project(project)
        assert info["sampling"] == "Uncertainty sampling"
        assert info["model_version"] == "xal round 0"
        scores = _scores(api, project)
        assert sorted(scores.values()) == [k / 24 for k in range(24)]
        before = scores
        tasks = {t["data"]["xal_id"]: t for t in api.tasks(project)}
        # the annotator's browser can load a task's image (as the logged-in user)
        image = tasks[0]["data"]["image"]
        assert image.startswith("/data/local-files/?d=")
        assert _as_a_browser(api.url, image)[:8] == b"\x89PNG\r\n\x1a\n"
        tasks = {k: t["id"] for k, t in tasks.items()}
        first = sorted(scores, key=scores.get)[:3]  # as the annotator sees them, in order
        annotations = {}
        for xal_id in first:
            label, mask = truth[f"img/{xal_id:02d}.png"]
            ys, xs = np.nonzero(mask)
            annotations[xal_id] = api.annotate(tasks[xal_id], [
                {"from_name": "label", "to_name": "image", "type": "choices",
                 "value": {"choices": [label]}},
                {"from_name": "roi_box", "to_name": "image", "type": "rectanglelabels",
                 "original_width": 32, "original_height": 32, "image_rotation": 0,
                 "value": {"x": 100 * xs.min() / 32, "y": 100 * ys.min() / 32,
                           "width": 100 * (xs.max() + 1 - xs.min()) / 32,
                           "height": 100 * (ys.max() + 1 - ys.min()) / 32, "rotation": 0,
                           "rectanglelabels": ["ROI"]}}])["id"]
        deadline = time.time() + 180
        while not any("the 24 predictions of xal round 1" in line for line in log):
            assert time.time() < deadline, f"no retraining after 3 labels: {log}"
            time.sleep(1)
        assert api.project(project)["model_version"] == "xal round 1"
        assert backend.health()["last_error"] is None, log
        state = Campaign.open(c.folder).state
        assert {e["id"] for e in state["labelled"]} == set(first)
        assert all(e["roi"] and e["source"] == "label-studio" for e in state["labelled"])
        assert api.model_versions(project) == ["xal round 1"]  # one prediction per task
        scores = _scores(api, project)
        unlabelled = sorted((i for i in scores if i not in first), key=scores.get)
        assert unlabelled == backend.ranking.order  # ascending score: the strategy's order
        assert scores[unlabelled[0]] == 0.0 and scores != before
        # a project of the same title with other classes is refused, and left as it was
        other = Campaign.create(tmp_path / "clash", root, CLASSES, manifest=root /
                                "manifest.csv", image_size=32, epochs=2)
        clash = api.create_project("xal campaign clash", label_config(["benign", "malignant"]))
        with pytest.raises(CampaignError, match=r"has the classes \['benign', 'malignant'\], "
                                                r"the campaign \['glioma'"):
            connect(other, api.url, api.token, url, token="t0ken")
        assert api.tasks(clash) == [] and not (other.folder / "labelstudio.json").exists()
        # the annotator deletes one annotation: its label leaves at the next training
        api.request("DELETE", f"/api/annotations/{annotations[first[0]]}/")
        deadline = time.time() + 30
        while backend.health()["n_waiting"] != 1:
            assert time.time() < deadline, f"the deletion did not arrive: {log}"
            time.sleep(0.5)
        assert Campaign.open(c.folder).retrain()["n_labelled"] == 2
        assert {e["id"] for e in Campaign.open(c.folder).state["labelled"]} == set(first[1:])
    finally:
        server.shutdown()
        server.server_close()


def test_label_config_lists_the_classes():
    xml = label_config(["a & b", "c"])
    assert '<Choice value="a &amp; b"/>' in xml and "BrushLabels" in xml


def test_attention_box_follows_the_peak_region():
    from xal_sklearn.campaign import _attention_box

    cam = np.zeros((8, 8))
    cam[1:3, 1:3] = 1.0  # the peak region
    cam[6, 6] = 0.6  # a weaker, separate hot spot
    assert _attention_box(cam, (16, 16)) == (2.0, 2.0, 6.0, 6.0)
    assert _attention_box(np.zeros((8, 8)), (16, 16)) is None


# --- first contact (issue 19): which scan a row is, repeated imports, pending batches ----

@pytest.fixture()
def named_scans(tmp_path, scans):
    """The scans' manifest with the user's own ids and, for two images, two mask files."""
    root, truth = scans
    manifest = tmp_path / "named.csv"
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "image", "mask"])
        for i in range(24):
            mask = f"roi/{i:02d}.png" + (f"; roi/{i + 1:02d}.png" if i < 2 else "")
            w.writerow([f"ACC-{1000 + i}", f"img/{i:02d}.png", mask])
    return root, truth, manifest


def test_batch_files_name_the_original_scan(tmp_path, named_scans):
    root, _, manifest = named_scans
    c = Campaign.create(tmp_path / "study", root, CLASSES, manifest=manifest, image_size=32,
                        epochs=1, document_root=tmp_path)
    r = c.query(3)
    folder = r["folder"]
    with open(folder / "to_label.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    tasks = json.loads((folder / "tasks.json").read_text())
    for row, task, xal_id in zip(rows, tasks, r["ids"]):
        original = str(root / f"img/{xal_id:02d}.png")
        assert row["original_image"] == original and row["manifest_id"] == f"ACC-{1000 + xal_id}"
        assert task["data"]["original_image"] == original
        assert task["data"]["scan"] == f"{original} (id ACC-{1000 + xal_id})"
    # not $source: Label Studio's interface reads that as the task's whole JSON
    assert '<Header value="$scan"/>' in (folder / "label_config.xml").read_text()
    meta = json.loads((folder / "batch.json").read_text())
    assert meta["images"][0]["manifest_id"] == f"ACC-{1000 + r['ids'][0]}"
    # several mask files in one cell: the ROI is their union
    pool = Campaign.open(c.folder)._dataset([0, 1, 2])
    first, second = (np.asarray(Image.open(root / f"roi/{i:02d}.png")) > 0 for i in (0, 1))
    from xal_sklearn.datasets import resize_mask

    np.testing.assert_array_equal(pool.mask(0), resize_mask(first | second, (32, 32)))


def test_importing_twice_names_the_batch_and_when(tmp_path, scans):
    c = _new(tmp_path, scans)
    c.query(6)
    _fill_csv(c, 1, scans[1], tmp_path / "one.csv")
    c.import_labels(tmp_path / "one.csv")
    before = (c.folder / "state" / "state.json").read_text()
    with pytest.raises(CampaignError) as info:
        Campaign.open(c.folder).import_labels(tmp_path / "one.csv")
    message = str(info.value)
    assert "one.csv holds labels that were already imported: batch 001 was imported on 20" \
        in message and "(6 labels, from one.csv)" in message
    assert "No batch is waiting for labels; run query for a new one." in message
    c = Campaign.open(c.folder)
    c.query(4)
    with pytest.raises(CampaignError) as info:  # the old batch's CSV while 002 is pending
        c.import_labels(tmp_path / "one.csv")
    assert "batch 001 was imported on" in str(info.value)
    assert "Waiting for labels: batch 002" in str(info.value)
    assert json.loads((c.folder / "state" / "state.json").read_text())["labelled"] == \
        json.loads(before)["labelled"]


def test_one_label_studio_project_for_several_batches(tmp_path, scans):
    c = _new(tmp_path, scans)
    c.query(4)
    first = _export(c, 1, scans[1])
    (tmp_path / "e1.json").write_text(json.dumps(first))
    c.import_labels(tmp_path / "e1.json")
    c.query(4)
    both = first + _export(c, 2, scans[1])  # the whole project, exported again
    (tmp_path / "e2.json").write_text(json.dumps(both))
    result = c.import_labels(tmp_path / "e2.json")
    assert result["n_imported"] == 4 and result["n_skipped"] == 4 and result["batches"] == [2]
    c.query(4)
    changed = json.loads(json.dumps(first))
    old = changed[0]["annotations"][0]["result"][0]["value"]["choices"][0]
    changed[0]["annotations"][0]["result"][0]["value"]["choices"] = [
        next(k for k in CLASSES if k != old)]
    (tmp_path / "e3.json").write_text(json.dumps(changed + _export(c, 3, scans[1])))
    with pytest.raises(AnnotationImportError, match=f"was imported before \\(batch 001\\) as "
                                                    f"'{old}'"):
        c.import_labels(tmp_path / "e3.json")


def test_query_while_a_batch_is_pending_says_so(tmp_path, scans):
    c = _new(tmp_path, scans)
    assert c.query(6)["notes"] == []
    r = c.query(5)
    assert r["still_pending"] == {1: 6}
    assert "Still waiting for labels: batch 001 (6 images)" in r["notes"][0]
    assert "6 images are reserved" in r["notes"][0]
    r = c.query(30)
    assert len(r["ids"]) == 13 and r["n_requested"] == 30
    assert "Asked for 30 images, got 13: that is every image left (0 labelled, 11 reserved" \
        in r["notes"][-1]
    with pytest.raises(CampaignError, match="batch\\(es\\) 001, 002, 003 still wait"):
        c.query(1)


def test_cli_query_prints_the_notes(tmp_path, scans, capsys):
    from xal_sklearn.cli import main

    root, _ = scans
    study = tmp_path / "study"
    assert main(["campaign", "init", str(study), "--images", str(root), "--manifest",
                 str(root / "manifest.csv"), "--classes", ",".join(CLASSES),
                 "--image-size", "32", "--epochs", "1"]) == 0
    assert main(["campaign", "query", str(study), "-n", "20"]) == 0
    capsys.readouterr()
    assert main(["campaign", "query", str(study), "-n", "5"]) == 0
    out = capsys.readouterr().out
    assert "Note: Still waiting for labels: batch 001 (20 images)" in out
    assert "Note: Asked for 5 images, got 4" in out


def test_cli_init_with_the_recipe_chooses_margin_and_says_to_pretrain(tmp_path, scans, capsys):
    from xal_sklearn.cli import main

    root, _ = scans
    base = ["--images", str(root), "--manifest", str(root / "manifest.csv"), "--classes",
            ",".join(CLASSES), "--image-size", "32", "--epochs", "1", "--recipe", "recommended"]
    assert main(["campaign", "init", str(tmp_path / "a"), *base]) == 0
    assert "run `xal campaign pretrain" in capsys.readouterr().out
    assert Campaign.open(tmp_path / "a").config["strategy"]["name"] == "margin"
    assert main(["campaign", "init", str(tmp_path / "b"), *base, "--strategy", "entropy"]) == 0
    assert Campaign.open(tmp_path / "b").config["strategy"]["name"] == "entropy"


def test_context_channels_are_chosen_at_init_and_refused_when_they_cannot_apply(
        tmp_path, scans, capsys):
    from xal_sklearn.cli import main

    root, truth = scans
    # the CLI's number reaches the network every round trains (8 channels, not the default 16)
    study = tmp_path / "study"
    assert main(["campaign", "init", str(study), "--images", str(root), "--manifest",
                 str(root / "manifest.csv"), "--classes", ",".join(CLASSES),
                 "--image-size", "32", "--epochs", "1", "--context-channels", "8"]) == 0
    c = Campaign.open(study)
    assert c.config["classifier"]["module__context_channels"] == 8
    first = c.query(6)
    _fill_csv(c, first["batch"], truth, tmp_path / "a.csv")
    c.import_labels(tmp_path / "a.csv")
    module = Campaign.open(study).learner().estimator_.module_
    assert module.context[0].out_channels == 8 and module.classifier[-1].in_features == 64
    # 0: the network without a branch; a share is kept as the share
    assert _new(tmp_path / "none", scans, context_channels=0)._template().get_params()[
        "module__context_channels"] == 0
    assert _new(tmp_path / "share", scans, context_channels=0.5).config["classifier"][
        "module__context_channels"] == 0.5
    # refusals name the problem, and nothing is created
    for bad, match in ((64, "from 0 to n_filters\\[-1\\] - 1 = 63"), (1.0, "share"),
                       (-1, "whole number"), (True, "got True")):
        with pytest.raises(CampaignError, match=match):
            _new(tmp_path / "bad", scans, context_channels=bad)
        assert not (tmp_path / "bad").exists()
    with pytest.raises(CampaignError, match="backbone \\(resnet18\\) has no context branch"):
        _new(tmp_path / "bad", scans, module="resnet18", context_channels=8)
    assert not (tmp_path / "bad").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["campaign", "init", str(tmp_path / "bad"), "--images", str(root),
              "--classes", ",".join(CLASSES), "--context-channels", "70"])
    assert "--context-channels must be a number of channels from 0 to 63" in (
        capsys.readouterr().err)
    assert not (tmp_path / "bad").exists()


def test_every_bad_row_is_listed_with_near_misses(tmp_path, scans):
    c = _new(tmp_path, scans)
    c.query(6)
    meta = _fill_csv(c, 1, scans[1], tmp_path / "a.csv")
    rows = list(csv.reader(open(tmp_path / "a.csv")))
    rows[1][2] = "Glioma"
    rows[3][2] = " meningiomma"
    rows[5][0] = "x"
    with open(tmp_path / "bad.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    with pytest.raises(AnnotationImportError) as info:
        c.import_labels(tmp_path / "bad.csv")
    message = str(info.value)
    assert "3 problem(s); nothing was imported" in message
    assert "line 2: unknown label 'Glioma' (did you mean 'glioma'?)" in message
    assert "line 4: unknown label 'meningiomma' (did you mean 'meningioma'?)" in message
    assert "line 6: xal_id 'x' is not an id" in message
    # an export with many bad tasks lists the first 20, then counts the rest
    tasks = _export(c, 1, scans[1])
    many = [json.loads(json.dumps(tasks[0])) for _ in range(25)]
    for k, t in enumerate(many):
        t["id"] = 500 + k
        t["annotations"][0]["result"][0]["value"]["choices"] = ["tumour"]
    (tmp_path / "many.json").write_text(json.dumps(many))
    with pytest.raises(AnnotationImportError) as info:
        c.import_labels(tmp_path / "many.json")
    message = str(info.value)
    assert "25 problem(s)" in message and "task 519:" in message
    assert "task 520:" not in message and "... and 5 more." in message
    assert len(meta["images"]) == 6


def test_campaign_pretrain_warm_starts_later_rounds(tmp_path, scans, capsys):
    from xal_sklearn import EncoderWeights
    from xal_sklearn.cli import main

    c = _new(tmp_path, scans)
    first = c.query(6)
    with pytest.raises(CampaignError, match="24 images, fewer than one pretraining batch of 256"):
        c.pretrain(epochs=1)
    assert main(["campaign", "pretrain", str(c.folder), "--epochs", "1", "--batch-size", "8",
                 "--method", "byol"]) in (0, None)
    out = capsys.readouterr().out
    assert "Pretrained (byol, 1 epochs on 24 pool images, no labels)" in out
    assert "Warm start: byol, 1 epochs on 24 pool images" in out
    weights = EncoderWeights.load(c.folder / "pretrain.pt")
    again = Campaign.open(c.folder)
    assert again.config["classifier"]["init_weights"] == "pretrain.pt"  # relative: folders move
    template = again._template()
    assert template.init_weights == str(c.folder / "pretrain.pt")
    assert template.head_init == "probe"  # later heads start from a probe of the features
    _fill_csv(again, first["batch"], scans[1], tmp_path / "a.csv")
    again.import_labels(tmp_path / "a.csv")  # trains from the warm start, and works
    assert Campaign.open(c.folder).learner() is not None
    net = template.fit(*again._labelled_arrays()[:2])
    assert net.initialized_ and set(weights.state) < set(net.module_.state_dict())


def test_roi_settings_are_pinned_in_the_config_and_old_campaigns_keep_theirs(tmp_path, scans):
    c = _new(tmp_path, scans, roi_loss="rank", roi_warmup=3)
    settings = {k: c.config["classifier"][k] for k in ("roi_weight", "roi_balance",
                                                       "roi_dilation", "roi_warmup",
                                                       "roi_conflict")}
    defaults = CNNClassifier().get_params()
    assert settings == {"roi_weight": defaults["roi_weight"],
                        "roi_balance": defaults["roi_balance"],
                        "roi_dilation": defaults["roi_dilation"], "roi_warmup": 3,
                        "roi_conflict": defaults["roi_conflict"]}
    with pytest.raises(ValueError, match="Unknown roi_balance 'mean'"):
        Campaign.create(tmp_path / "other", scans[0], CLASSES, roi_loss="rank",
                        roi_balance="mean")
    assert not (tmp_path / "other").exists()
    # a campaign made before these settings existed trains as it did then
    path = c.folder / "campaign.json"
    config = json.loads(path.read_text())
    for key in ("roi_balance", "roi_dilation", "roi_warmup", "roi_conflict",
                "module__context_channels"):
        del config["classifier"][key]
    path.write_text(json.dumps(config))
    old = Campaign.open(c.folder)._template()
    assert (old.roi_balance, old.roi_dilation, old.roi_warmup, old.roi_conflict) == (
        "fixed", 0, 0, "sum")
    # the network's context branch likewise: pinned at creation, absent = made without one
    assert c._template().get_params()["module__context_channels"] == 0.25
    assert old.get_params()["module__context_channels"] == 0


def test_second_round_ranks_by_the_rois_the_model_draws(tmp_path, scans, capsys):
    """A pool with no ROIs: once the expert drew some, the ROI model draws the pool's."""
    from xal_sklearn.cli import main

    root, truth = scans
    with open(tmp_path / "images.csv", "w", newline="") as f:
        csv.writer(f).writerows([["image"]] + [[name] for name in sorted(truth)])
    c = Campaign.create(tmp_path / "study", root, CLASSES, manifest=tmp_path / "images.csv",
                        image_size=32, epochs=2, document_root=tmp_path, roi_loss="rank")
    assert c.config["strategy"]["name"] == "dual" and c.config["roi_model"]["threshold"] == 0.4
    assert "ROI model: not trained yet" in c.summary()
    first = c.query(12)
    _fill_csv(c, first["batch"], truth, tmp_path / "a.csv")
    c.import_labels(tmp_path / "a.csv")
    again = Campaign.open(c.folder)
    quality = again.status()["roi_model"]
    assert quality["n"] == 12 and quality["folds"] == 3 and 0 <= quality["dice"] <= 1
    assert quality["roi_auc"] > 0.5
    assert "3-fold cross-validated on the 12 labelled images with an ROI" in again.summary()
    second = again.query(5)
    assert "drawn by the ROI model" in second["method"]
    meta = json.loads((again.folder / "batches" / "002" / "batch.json").read_text())
    logged = [img["roi_source"] for img in meta["images"]]
    assert set(logged) <= {"predicted", "none"} and "predicted" in logged
    assert all(0 <= img["misalignment"] <= 1 for img in meta["images"]
               if img["roi_source"] == "predicted")
    assert all(img["box"] == "predicted_roi" for img in meta["images"]
               if img["roi_source"] == "predicted")
    # the scores it logged are the dual criterion's on the predicted ROIs
    learner = Campaign.open(c.folder).learner()
    for img in meta["images"]:
        if img["roi_source"] == "predicted":
            assert img["acquisition_score"] == pytest.approx(
                0.3 * img["uncertainty"] + 0.7 * img["misalignment"], abs=1e-6)
    # saved and loaded with the campaign's learner
    assert learner.roi_model_ is not None and learner.roi_model_.n_train_ == 12
    assert main(["campaign", "status", str(c.folder)]) in (0, None)
    assert "ROI model: 3-fold cross-validated" in capsys.readouterr().out


def test_the_strategy_is_chosen_by_name_from_the_one_registry(tmp_path, scans):
    from xal_sklearn import cli
    from xal_sklearn.registry import STRATEGY_NAMES, strategy_spec

    parser = cli._parser()
    init = parser._subparsers._group_actions[0].choices["campaign"]._subparsers \
        ._group_actions[0].choices["init"]
    choices = next(a.choices for a in init._actions if a.dest == "strategy")
    assert tuple(choices) == STRATEGY_NAMES and cli.STRATEGY_NAMES is STRATEGY_NAMES
    for name in STRATEGY_NAMES:
        assert callable(strategy_spec(name)[0])
    c = _new(tmp_path, scans, strategy="badge")
    assert c._strategy()[0] is strategy_spec("badge")[0] and c.config["roi_model"] is None
    with pytest.raises(CampaignError, match="Unknown strategy 'dual2'; choose from random"):
        _new(tmp_path / "x", scans, strategy="dual2")
    with pytest.raises(CampaignError, match="roi_threshold is a setting of the ROI model"):
        _new(tmp_path / "y", scans, strategy="entropy", roi_threshold=0.5)
    with pytest.raises(CampaignError, match=r"threshold must lie in \(0, 1\)"):
        _new(tmp_path / "z", scans, roi_threshold=1.5)
    # a campaign made before strategies had names keeps the old rule
    path = c.folder / "campaign.json"
    config = json.loads(path.read_text())
    del config["strategy"]["name"]
    path.write_text(json.dumps(config))
    assert Campaign.open(c.folder)._strategy()[0].__name__ == "dual_criterion_sampling"


def test_a_manifest_as_a_user_writes_it(tmp_path, scans):
    """Paths relative to the manifest's folder get a hint; label/group columns are said to be
    unread; the manifest's masks reach the labelled set and the overlays (issue 39, item 9)."""
    from xal_sklearn.campaign import ManifestColumnsWarning

    root, truth = scans
    with pytest.raises(CampaignError) as info:  # --images img/ with paths img/00.png
        Campaign.create(tmp_path / "s0", root / "img", CLASSES, manifest=root / "manifest.csv")
    message = str(info.value)
    assert "relative to the image folder" in message
    assert f"They are all files under {root}: pass that as the image folder." in message
    assert not (tmp_path / "s0").exists()
    labelled = tmp_path / "labels.csv"
    with open(labelled, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask", "label", "group"])
        for i, name in enumerate(sorted(truth)):
            mask = "" if i % 4 == 0 else name.replace("img/", "roi/")
            w.writerow([name, mask, truth[name][0], i // 2])
    with pytest.warns(ManifestColumnsWarning, match="column\\(s\\) 'label', 'group' are not "
                      "read; a campaign reads image, mask, id"):
        c = Campaign.create(tmp_path / "study", root, CLASSES, manifest=labelled, image_size=32,
                            epochs=2, document_root=tmp_path, roi_loss="rank")
    first = c.query(8)
    meta = _fill_csv(c, first["batch"], truth, tmp_path / "a.csv", boxes=False)
    r = c.import_labels(tmp_path / "a.csv")
    with_mask = [img for img in meta["images"] if c.pool["masks"][img["id"]]]
    assert r["n_with_roi"] == r["n_roi_from_manifest"] == len(with_mask) > 0
    again = Campaign.open(c.folder)
    assert again.status()["n_with_roi"] == len(with_mask)
    assert "(%d with an ROI)" % len(with_mask) in again.summary()
    learner = again.learner()
    assert learner.roi_annotated_.sum() == len(with_mask)
    assert sum(e.get("roi_from") == "manifest" for e in again.state["labelled"]) == len(with_mask)
    second = again.query(6)
    meta = json.loads((again.folder / "batches" / f"{second['batch']:03d}" / "batch.json")
                      .read_text())
    for img in meta["images"]:  # the overlay outlines the ROI the query compared with
        expected = "manifest_roi" if again.pool["masks"][img["id"]] else {"predicted_roi",
                                                                           "attention"}
        assert img["box"] in ({expected} if isinstance(expected, str) else expected)


def test_a_folder_written_before_the_campaign_package_opens_and_goes_on(tmp_path):
    """tests/data/campaign_01b402b was written by the single-module campaign (commit
    01b402b, before issue 40 split it into a package): one imported round, a batch
    pending. It opens, its learner and ROI model load, and the round goes on."""
    source = ROOT / "tests" / "data" / "campaign_01b402b"
    shutil.copytree(source, tmp_path / "old")
    folder = tmp_path / "old" / "study"
    config = json.loads((folder / "campaign.json").read_text())
    config["pool_root"] = str(tmp_path / "old" / "scans")  # absolute where it was written
    config["document_root"] = str(tmp_path / "old")
    (folder / "campaign.json").write_text(json.dumps(config))
    expected = json.loads((source / "expected.json").read_text())
    c = Campaign.open(folder)
    assert [e["id"] for e in c.state["labelled"]] == expected["labelled"]
    assert c.status()["pending"] == {2: 3}
    learner = c.learner()
    assert learner.roi_model_ is not None and learner.roi_model_.n_train_ == 6
    assert learner.predict(c._images([0, 1])).shape == (2,)
    # label the pending batch, as the expert would, and go on
    meta = json.loads((folder / "batches" / "002" / "batch.json").read_text())
    assert [img["id"] for img in meta["images"]] == expected["pending"]
    with open(tmp_path / "b.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["xal_id", "image", "label", "x_min", "y_min", "x_max", "y_max"])
        for img in meta["images"]:
            w.writerow([img["id"], img["image"], expected["truth"][img["image"]], "", "", "",
                        ""])
    r = Campaign.open(folder).import_labels(tmp_path / "b.csv")
    assert r["n_imported"] == 3 and r["batches"] == [2]
    again = Campaign.open(folder)
    assert again.status()["n_labelled"] == 9 and again.status()["rounds"] == 2
    assert len(again.query(2)["ids"]) == 2
