"""One labelling round on the brain-tumour MRI set through a real Label Studio, timed.

Quoted by docs/campaign.rst (a round's timings).

    python benchmarks/bench_campaign.py --data ../shared/data/brain-tumor-figshare \
        --label-studio .ls-venv/bin/label-studio

Creates a campaign over the whole set (3,064 slices, resized to 128 px; the expert
tumour masks serve as the pool's ROIs), labels a random first batch of 20 through the
CSV path, then queries 20 more with the trained model (timed: scoring the ~3,000-image
pool), sends them to a Label Studio server started here, answers them as an expert
would (class + rectangle, class + brush strokes, class only) through its API, exports,
and imports the export (timed: import + retrain). The "expert" answers from the data
set's own labels and masks; nothing is read from the pool's labels for selection.
"""

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from xal_sklearn.campaign import Campaign
from xal_sklearn.labelstudio import LabelStudioClient


def _truth(root):
    with open(root / "labels.csv", newline="") as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def _mask(root, row):
    return np.asarray(Image.open(root / row["mask"])) > 0


def _start_label_studio(exe, data):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(data),
               LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
               LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="/")
    proc = subprocess.Popen([exe, "start", "--no-browser", "--port", str(port), "--host",
                             "127.0.0.1", "--data-dir", str(data), "--username",
                             "radiologist@example.org", "--password", "xal-Passw0rd-1"],
                            stdout=open(data / "server.log", "w"), stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)
    start = time.time()
    while time.time() - start < 300:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc, f"http://127.0.0.1:{port}", time.time() - start
        except OSError:
            time.sleep(1)
    raise RuntimeError("Label Studio did not start")


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/brain-tumor-figshare")
    p.add_argument("--label-studio", default=".ls-venv/bin/label-studio")
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch", type=int, default=20)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--out", default=None, help="campaign folder (default: a temp folder)")
    args = p.parse_args()
    root = Path(args.data).resolve()
    truth = _truth(root)
    work = Path(args.out or tempfile.mkdtemp(prefix="xal-campaign-"))
    manifest = work / "pool.csv"
    work.mkdir(parents=True, exist_ok=True)
    with open(manifest, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask"])
        w.writerows([r["image"], r["mask"]] for r in truth.values())
    t = time.perf_counter()
    c = Campaign.create(work / "study", root, ["glioma", "meningioma", "pituitary"],
                        manifest=manifest, image_size=args.image_size, epochs=args.epochs)
    print(f"campaign over {len(c.pool['images'])} images: {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    first = c.query(args.batch)
    print(f"batch 1 ({first['method'][:13]}): {time.perf_counter() - t:.1f} s")
    meta = json.loads((first["folder"] / "batch.json").read_text())
    with open(work / "batch1.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["xal_id", "label", "x_min", "y_min", "x_max", "y_max"])
        for img in meta["images"]:
            ys, xs = np.nonzero(_mask(root, truth[img["image"]]))
            w.writerow([img["id"], truth[img["image"]]["label"], xs.min(), ys.min(),
                        xs.max() + 1, ys.max() + 1])
    t = time.perf_counter()
    c.import_labels(work / "batch1.csv")
    print(f"import of batch 1 (CSV) + training: {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    second = Campaign.open(c.folder).query(args.batch)
    print(f"query of batch 2 over a pool of {second['n_pool']} images at {args.image_size} px "
          f"({second['method'][:22]}): {time.perf_counter() - t:.1f} s")

    data = Path(tempfile.mkdtemp(prefix="ls-data-"))
    proc, url, waited = _start_label_studio(args.label_studio, data)
    print(f"Label Studio answered /health after {waited:.0f} s")
    try:
        api = LabelStudioClient(url, "radiologist@example.org", "xal-Passw0rd-1")
        folder = second["folder"]
        project = api.create_project("brain MRI batch 2", (folder / "label_config.xml").read_text())
        print("import into Label Studio:", api.import_tasks(
            project, json.loads((folder / "tasks.json").read_text()))["task_count"], "tasks")
        from label_studio_brush_rle_rs import encode_rle

        meta = {img["id"]: img for img in json.loads((folder / "batch.json").read_text())["images"]}
        agree = 0
        for k, task in enumerate(api.tasks(project)):
            img = meta[task["data"]["xal_id"]]
            row = truth[img["image"]]
            mask = _mask(root, row)
            w, h = img["width"], img["height"]
            agree += img["predicted"] == row["label"]
            result = [{"from_name": "label", "to_name": "image", "type": "choices",
                       "value": {"choices": [row["label"]]}}]
            if k % 3 == 0:
                ys, xs = np.nonzero(mask)
                result.append({"from_name": "roi_box", "to_name": "image",
                               "type": "rectanglelabels", "original_width": w,
                               "original_height": h, "image_rotation": 0, "value": {
                                   "x": 100 * xs.min() / w, "y": 100 * ys.min() / h,
                                   "width": 100 * (xs.max() + 1 - xs.min()) / w,
                                   "height": 100 * (ys.max() + 1 - ys.min()) / h,
                                   "rotation": 0, "rectanglelabels": ["ROI"]}})
            elif k % 3 == 1:
                rle = encode_rle(np.repeat(mask.astype(np.uint8).ravel() * 255, 4), 8,
                                 [3, 4, 8, 16])
                result.append({"from_name": "roi_brush", "to_name": "image",
                               "type": "brushlabels", "original_width": w,
                               "original_height": h, "image_rotation": 0,
                               "value": {"format": "rle", "rle": list(rle),
                                         "brushlabels": ["ROI"]}})
            api.annotate(task["id"], result)
        export = api.export(project)
        (work / "export.json").write_text(json.dumps(export))
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    t = time.perf_counter()
    result = Campaign.open(c.folder).import_labels(work / "export.json")
    print(f"import of the Label Studio export + retraining on {40} labels: "
          f"{time.perf_counter() - t:.1f} s; {result}")
    print(f"pre-annotated class correct on {agree} of {len(meta)} batch-2 images")
    print(Campaign.open(c.folder).summary())
    print(f"overlays: {folder / 'overlays'}")


if __name__ == "__main__":
    main()
