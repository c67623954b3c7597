"""The screenshot of docs/campaign.rst's live loop, taken in a real browser.

    python docs/screenshots/live_loop.py --data ../shared/data/busi \
        --label-studio .ls-venv/bin/label-studio --chromium /usr/bin/chromium \
        --playwright-python /path/to/venv-with-playwright/bin/python

Starts Label Studio, a campaign over the breast-ultrasound set (64 px, its lesion masks
as the manifest's ROIs) and its ML backend, runs ``connect``, labels the first 10 tasks
of the queue through Label Studio's API as an expert would (class and a box around the
lesion mask; answers from labels.csv, read only for the images the queue hands out), waits
for the retraining, and has headless Chromium (driven by Playwright, which is not a
dependency of the package: any environment that has it) photograph the Data Manager
sorted by prediction score, ascending (``live_data_manager.png``), and the task the queue
hands out next with the model's pre-annotations (``live_task.png``), beside itself.
"""

import argparse
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from xal_sklearn.campaign import Backend, Campaign, connect, make_server, read_connection
from xal_sklearn.labelstudio import LabelStudioClient

HERE = Path(__file__).resolve().parent
EMAIL, PASSWORD = "radiologist@example.org", "xal-Passw0rd-1"

SHOOT = """
import sys
from playwright.sync_api import sync_playwright
base, page_url, out, task_url, task_out, chromium, email, password = sys.argv[1:]
with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1400, "height": 820})
    page.goto(base + "/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    for url, path in ((page_url, out), (task_url, task_out)):
        page.goto(url)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(5000)
        page.screenshot(path=path)
    browser.close()
"""


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--label-studio", required=True)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--playwright-python", default=sys.executable)
    args = p.parse_args()
    root = Path(args.data).resolve()
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    work = Path(tempfile.mkdtemp(prefix="xal-shot-"))
    with open(work / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "mask"])
        w.writerows([r["image"], r["mask"]] for r in rows)
    truth = {r["image"]: r for r in rows}
    port = _free_port()
    env = dict(os.environ, LABEL_STUDIO_BASE_DATA_DIR=str(work / "ls"),
               LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED="true",
               LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT="/", ML_BLOCK_LOCAL_IP="false",
               SSRF_PROTECTION_ENABLED="false")
    ls = subprocess.Popen([args.label_studio, "start", "--no-browser", "--port", str(port),
                           "--host", "127.0.0.1", "--data-dir", str(work / "ls"), "--username",
                           EMAIL, "--password", PASSWORD], env=env, start_new_session=True,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2).read()
                break
            except OSError:
                time.sleep(1)
        api = LabelStudioClient(base, EMAIL, PASSWORD)
        classes = sorted({r["label"] for r in rows})
        c = Campaign.create(work / "study", root, classes, manifest=work / "manifest.csv",
                            image_size=64, epochs=10)
        backend = Backend(c.folder, retrain_every=10, log=print,
                          label_studio=lambda v, predict: api.push_predictions(
                              read_connection(c.folder)["project"], v, predict,
                              replaces="xal round "))
        server = make_server(backend, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        r = connect(c, base, api.token, f"http://127.0.0.1:{server.server_port}",
                    title="Breast ultrasound (live)")
        print("\n".join(r["actions"]))
        pid = r["project"]
        tasks = {t["data"]["xal_id"]: t["id"] for t in api.tasks(pid)}
        for xal_id in backend.ranking.order[:10]:  # the queue's first ten
            row = truth[c.pool["images"][xal_id]]
            result = [{"from_name": "label", "to_name": "image", "type": "choices",
                       "value": {"choices": [row["label"]]}}]
            masks = [np.asarray(Image.open(root / m.strip())) > 0
                     for m in row["mask"].split(";") if m.strip()]
            mask = np.logical_or.reduce(masks) if masks else None
            if mask is not None and mask.any():
                mask = mask if mask.ndim == 2 else mask.any(-1)
                h, w = mask.shape
                ys, xs = np.nonzero(mask)
                result.append({"from_name": "roi_box", "to_name": "image",
                               "type": "rectanglelabels", "original_width": w,
                               "original_height": h, "image_rotation": 0,
                               "value": {"x": 100 * xs.min() / w, "y": 100 * ys.min() / h,
                                         "width": 100 * (xs.max() + 1 - xs.min()) / w,
                                         "height": 100 * (ys.max() + 1 - ys.min()) / h,
                                         "rotation": 0, "rectanglelabels": ["ROI"]}})
            api.annotate(tasks[xal_id], result)
        while api.project(pid)["model_version"] != "xal round 1":
            time.sleep(2)
        hidden = ["tasks:inner_id", "tasks:annotations_results", "tasks:data.xal_id",
                  "tasks:data.original_image", "tasks:data.manifest_id",
                  "tasks:cancelled_annotations", "tasks:annotations_ids",
                  "tasks:predictions_model_versions", "tasks:file_upload",
                  "tasks:storage_filename", "tasks:created_at", "tasks:updated_at",
                  "tasks:updated_by", "tasks:avg_lead_time", "tasks:draft_exists"]
        view = api.request("POST", "/api/dm/views", {"project": pid, "data": {
            "title": "By prediction score", "ordering": ["tasks:predictions_score"],
            "hiddenColumns": {"explore": hidden, "labeling": hidden}}})
        out, task_out = HERE / "live_data_manager.png", HERE / "live_task.png"
        first = tasks[backend.ranking.order[0]]  # the task the queue hands out next
        page = f"{base}/projects/{pid}/data?tab={view['id']}"
        subprocess.run([args.playwright_python, "-c", SHOOT, base, page, str(out),
                        f"{page}&task={first}", str(task_out), args.chromium, EMAIL,
                        PASSWORD], check=True)
        print(f"wrote {out}; {json.dumps(backend.health())}")
        server.shutdown()
    finally:
        os.killpg(ls.pid, signal.SIGTERM)


if __name__ == "__main__":
    main()
