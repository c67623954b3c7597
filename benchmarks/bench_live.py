"""The live loop's waits, timed: what the annotator and Label Studio wait for.

Quoted by docs/campaign.rst ("The live loop").

    python benchmarks/bench_live.py --data ../shared/data/busi --labels 40

A campaign over a folder with ``labels.csv`` (image, label; BUSI's layout) at
``--image-size``, served by :class:`~xal_sklearn.campaign.Backend` without a socket
(the HTTP layer adds a millisecond): the first ranking (no model), then ``--labels``
webhook annotations answered from ``labels.csv`` in the order the backend asks for them
(class only, as a hurried expert would), retraining every ``--retrain-every``. Timed:
a webhook (the journal write Label Studio waits for, limit 1 s), a ``/predict`` of 500
tasks, and each training + ranking of the pool (the time the expert labels with the
previous model's order). Medians over the repeats. Selection never reads labels.csv:
the "expert" answers only the images the backend put first. The loop waits for each
training to end before the next label, so that every label follows the newest order
(a real expert goes on labelling meanwhile).
"""

import argparse
import csv
import json
import statistics
import tempfile
import time
from pathlib import Path

from xal_sklearn.campaign import Backend, Campaign
from xal_sklearn.campaign._connect import task_data


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with labels.csv (image, label)")
    p.add_argument("--labels", type=int, default=40)
    p.add_argument("--retrain-every", type=int, default=10)
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()
    root = Path(args.data).resolve()
    with open(root / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    classes = sorted({r["label"] for r in rows})
    work = Path(tempfile.mkdtemp(prefix="xal-live-"))
    with open(work / "manifest.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image"])
        w.writerows([r["image"]] for r in rows)
    start = time.perf_counter()
    c = Campaign.create(work / "study", root, classes, manifest=work / "manifest.csv",
                        image_size=args.image_size, epochs=args.epochs)
    print(f"{len(rows)} pool images, classes {classes}, {args.image_size} px: campaign "
          f"created in {time.perf_counter() - start:.1f} s")
    trainings = []
    backend = Backend(c.folder, retrain_every=args.retrain_every,
                      log=lambda line: trainings.append(line) if "trained" in line else None)
    truth = {i: rows[i]["label"] for i in range(len(rows))}
    hooks, predicts, done = [], [], set()
    for n in range(args.labels):
        if backend.training:
            backend.wait()
        # as Label Studio's queue: the lowest score among the tasks nobody labelled yet
        xal_id = next(i for i in backend.ranking.order if i not in done)
        done.add(xal_id)
        task = {"id": 10_000 + xal_id, "data": task_data(c, xal_id)}
        annotation = {"id": 20_000 + n, "completed_by": 1, "was_cancelled": False,
                      "result": [{"from_name": "label", "to_name": "image",
                                  "type": "choices", "value": {"choices": [truth[xal_id]]}}]}
        t = time.perf_counter()
        status, answer = backend.handle("POST", "/webhook", {}, json.dumps(
            {"action": "ANNOTATION_CREATED", "task": task, "annotation": annotation}).encode())
        hooks.append(time.perf_counter() - t)
        assert status == 200, answer
        if n % 10 == 0:
            body = json.dumps({"tasks": [{"id": i, "data": task_data(c, i)}
                                         for i in range(min(500, len(rows)))]}).encode()
            t = time.perf_counter()
            assert backend.handle("POST", "/predict", {}, body)[0] == 200
            predicts.append(time.perf_counter() - t)
    backend.wait()
    print(f"webhook (journal write): median {1000 * statistics.median(hooks):.0f} ms, "
          f"max {1000 * max(hooks):.0f} ms over {len(hooks)}")
    print(f"/predict of 500 tasks: median {1000 * statistics.median(predicts):.0f} ms "
          f"over {len(predicts)}")
    for line in trainings:
        print(line)
    print(Campaign.open(c.folder).summary())


if __name__ == "__main__":
    main()
