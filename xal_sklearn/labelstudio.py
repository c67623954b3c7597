"""Label Studio interchange: project configuration, import tasks, and reading exports.

A query batch becomes Label Studio *tasks* (``tasks.json``) whose pre-annotations
are the model's predicted class (with its probability) and a rectangle around
its Grad-CAM's high-attention region, and whose prediction score is the
acquisition score. The expert answers with a class (``Choices``) and, optionally,
a region: rectangles (``RectangleLabels``) and brush strokes (``BrushLabels``,
Label Studio's RLE, decoded by ``label-studio-brush-rle-rs``). :func:`parse_export`
turns a Label Studio JSON export (or :func:`read_label_csv` a filled CSV) back
into labels and ROI masks.

An export is input from outside. Every task is checked before anything is
used: it must belong to the batch, point at the batch's image, carry a known
class, and regions must match the image's size and decode within bounds. The
whole file is checked first: :class:`AnnotationImportError` lists every task
(or CSV line) that does not fit, the first 20 and then a count, and nothing
is returned. A label that differs from a class only in case or spacing, or by
a typo, is named with the class it resembles.

**Several annotations of one image.** Cancelled (skipped) annotations are ignored.
If the remaining ones disagree on the class the task is refused; if they agree,
the most recently updated one's regions are used.
"""

import csv
import difflib
import json
import math
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import numpy as np

from ._validation import list_problems
from .datasets import boxes_to_masks

__all__ = ["AnnotationImportError", "Annotation", "LabelStudioClient", "label_config",
           "make_task", "prediction_result", "parse_export", "read_label_csv", "scan_words",
           "source_ids", "unknown_label",
           "CLASS_TAG", "BOX_TAG", "BRUSH_TAG"]

CLASS_TAG, BOX_TAG, BRUSH_TAG, IMAGE_TAG = "label", "roi_box", "roi_brush", "image"
ROI_LABEL = "ROI"
#: Refuse exports larger than this before parsing them (bytes).
MAX_EXPORT_BYTES = 512 * 2 ** 20


class AnnotationImportError(ValueError):
    """An export or filled CSV that cannot be imported; the message names the task or row."""


@dataclass
class Annotation:
    """One image's answer: its class and ROI mask (None when no region was drawn)."""

    xal_id: int
    label: str
    mask: np.ndarray | None
    annotator: str | None
    time: str | None


def unknown_label(label, classes):
    """'unknown label ...' with the class it resembles (case, spacing or a typo), if any."""
    folded = {str(c).strip().casefold(): c for c in classes}
    guess = folded.get(str(label).strip().casefold())
    if guess is None:
        close = difflib.get_close_matches(str(label), [str(c) for c in classes], n=1,
                                          cutoff=0.75)
        guess = close[0] if close else None
    hint = f" (did you mean {guess!r}?)" if guess is not None else ""
    return f"unknown label {label!r}{hint}; classes are {list(classes)}"


def _not_in_batch(xal_id, expected):
    batches = sorted({info["batch"] for info in expected.values() if "batch" in info})
    where = (f"the pending batch{'es' * (len(batches) > 1)} "
             + ", ".join(f"{b:03d}" for b in batches)) if batches else "this batch"
    return f"image id {xal_id} is not in {where}"


def _raise_all(problems, what):
    """One AnnotationImportError listing every problem (the first 20, then a count)."""
    if problems:
        raise AnnotationImportError(list_problems(what, problems, "; nothing was imported"))


def label_config(classes, overlay=True):
    """Label Studio labelling configuration (XML) for a campaign's classes.

    The expert sees which scan it is (its original file and id, the task's
    ``scan``; not ``source``, which Label Studio's interface reads as the whole task's
    JSON), the image and, below it (``overlay=True``, batches written to
    files), the Grad-CAM overlay of the model; picks one class; and may mark the
    ROI with rectangles or a brush. A live project (``overlay=False``) shows where
    the model looked as the pre-drawn rectangle instead, since its predictions
    change after every training.
    """
    choices = "\n".join(f"    <Choice value={quoteattr(str(c))}/>" for c in classes)
    below = ("""  <Header value="Where the model looked (Grad-CAM of its predicted class)"/>
  <Image name="overlay" value="$overlay"/>
""" if overlay else "")
    return f"""<View>
  <Header value="$scan"/>
  <Image name="{IMAGE_TAG}" value="$image" zoom="true"/>
  <Choices name="{CLASS_TAG}" toName="{IMAGE_TAG}" choice="single" required="true" showInline="true">
{choices}
  </Choices>
  <RectangleLabels name="{BOX_TAG}" toName="{IMAGE_TAG}">
    <Label value="{ROI_LABEL}" background="green"/>
  </RectangleLabels>
  <BrushLabels name="{BRUSH_TAG}" toName="{IMAGE_TAG}">
    <Label value="{ROI_LABEL}" background="green"/>
  </BrushLabels>
{below}</View>
"""


def make_task(xal_id, batch, image_url, overlay_url, width, height, predicted, probability,
              score, box=None, model_version="xal", original_image=None, manifest_id=""):
    """One Label Studio task with the model's pre-annotations.

    Parameters
    ----------
    xal_id : int
        The image's id in the campaign (kept in ``data.xal_id``).
    batch : int
    image_url, overlay_url : str
        What Label Studio loads for the image and the Grad-CAM overlay.
    width, height : int
        The image's size in pixels (``original_width`` / ``original_height``).
    predicted : str
        Predicted class; ``probability`` its probability.
    score : float
        Acquisition score (the prediction's ``score``).
    box : (x_min, y_min, x_max, y_max) in pixels, optional
        High-attention region, pre-drawn as a rectangle the expert can correct.
    model_version : str
    original_image : str, optional
        The pool file as given to the campaign (``data.original_image``).
    manifest_id : str
        The manifest's own id of the image, if any (``data.manifest_id``).
        Both are shown to the expert in ``data.scan``.
    """
    result = ([] if predicted is None else
              prediction_result(predicted, probability, box, width, height))
    original_image = image_url if original_image is None else str(original_image)
    scan = scan_words(original_image, manifest_id)
    return {"data": {IMAGE_TAG: image_url, "overlay": overlay_url, "xal_id": int(xal_id),
                     "xal_batch": int(batch), "original_image": original_image,
                     "manifest_id": str(manifest_id or ""), "scan": scan},
            "predictions": [{"model_version": model_version, "score": float(score),
                             "result": result}]}


def scan_words(original_image, manifest_id=""):
    """Which scan a task is, as the expert reads it above the image (``data.scan``): its
    file as given to the campaign and, if the manifest gave one, its own id."""
    return str(original_image) + (f" (id {manifest_id})" if manifest_id else "")


def prediction_result(predicted, probability, box, width, height):
    """A prediction's result items: the class (scored by its probability) and, if
    ``box`` = (x_min, y_min, x_max, y_max) in pixels of a ``width`` x ``height``
    image is given, a rectangle the expert can correct."""
    result = [{"from_name": CLASS_TAG, "to_name": IMAGE_TAG, "type": "choices",
               "value": {"choices": [str(predicted)]}, "score": float(probability)}]
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        result.append({
            "from_name": BOX_TAG, "to_name": IMAGE_TAG, "type": "rectanglelabels",
            "original_width": int(width), "original_height": int(height),
            "image_rotation": 0,
            "value": {"x": 100 * x0 / width, "y": 100 * y0 / height,
                      "width": 100 * (x1 - x0) / width, "height": 100 * (y1 - y0) / height,
                      "rotation": 0, "rectanglelabels": [ROI_LABEL]}})
    return result


# --- reading answers ----------------------------------------------------------------

def _rle_length(rle):
    """The value count in an RLE header (first 32 bits, big-endian), read before decoding."""
    if len(rle) < 5:
        raise ValueError("the RLE is shorter than its header")
    return int.from_bytes(bytes(rle[:4]), "big")


def _brush_mask(value, width, height):
    from label_studio_brush_rle_rs import decode_rle

    rle = value.get("rle")
    if not isinstance(rle, list) or not all(isinstance(v, int) and 0 <= v < 256 for v in rle):
        raise ValueError("brush 'rle' must be a list of bytes (0-255)")
    expected = width * height * 4
    if _rle_length(rle) != expected:  # also stops a header that claims gigabytes
        raise ValueError(f"brush RLE holds {_rle_length(rle)} values but a {width}x{height} "
                         f"RGBA image has {expected}")
    if len(rle) > expected + 64:
        raise ValueError("brush RLE is longer than any encoding of the image")
    pixels = np.asarray(decode_rle(rle, False), dtype=np.uint8)
    if pixels.size != expected:
        raise ValueError("brush RLE decodes to the wrong size")
    return pixels.reshape(height, width, 4)[:, :, 3] > 0


def _box_mask(value, width, height):
    try:
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
    except (KeyError, TypeError, ValueError):
        raise ValueError("a rectangle needs numeric x, y, width, height") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w <= 0 or h <= 0:
        raise ValueError(f"rectangle {x, y, w, h} is empty or not finite")
    if float(value.get("rotation", 0) or 0) != 0:
        raise ValueError("rotated rectangles are not supported")
    box = [x * width / 100, y * height / 100, (x + w) * width / 100, (y + h) * height / 100]
    return boxes_to_masks([np.array([box])], (height, width))[0]


def _region(item, size):
    """Mask of one result item, after checking it is drawn on an image of ``size``."""
    width, height = size
    ow, oh = item.get("original_width"), item.get("original_height")
    if (ow, oh) != (width, height):
        raise ValueError(f"a {item['type']} region was drawn on a {ow}x{oh} image but the "
                         f"image is {width}x{height}")
    value = item.get("value") or {}
    if item["type"] == "rectanglelabels":
        return _box_mask(value, width, height)
    return _brush_mask(value, width, height)


def _annotator(annotation):
    who = annotation.get("completed_by")
    if isinstance(who, dict):
        who = who.get("email") or who.get("id")
    return None if who is None else str(who)


def _check_unchanged(xal_id, labels, imported):
    """An answer for an image imported before: fine (skipped) only if its label is the same."""
    label, where = imported[xal_id]
    if set(labels) - {label}:
        raise ValueError(f"image id {xal_id} was imported before ({where}) as {label!r}, but "
                         f"this file labels it {sorted(set(labels))}; changing an imported "
                         "label is not supported")


def _choices(result):
    """The class choices in an annotation's result items."""
    return [c for item in result if item.get("type") == "choices"
            for c in (item.get("value") or {}).get("choices", [])]


def _one_task(task, expected, classes, imported=None):
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict) or "xal_id" not in data:
        raise ValueError("it has no data.xal_id: it was not made by this campaign")
    try:
        xal_id = int(data["xal_id"])
    except (TypeError, ValueError):
        raise ValueError(f"data.xal_id {data['xal_id']!r} is not an id") from None
    done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
    if xal_id not in expected and imported and xal_id in imported:
        _check_unchanged(xal_id, [c for a in done for c in _choices(a.get("result") or [])],
                         imported)
        return None
    if xal_id not in expected:
        raise ValueError(_not_in_batch(xal_id, expected))
    info = expected[xal_id]
    if data.get(IMAGE_TAG) != info["image_url"]:
        raise ValueError(f"its image {data.get(IMAGE_TAG)!r} is not the batch's image "
                         f"{info['image_url']!r}")
    if not done:
        return None  # not labelled (yet)
    answers = []
    for a in done:
        result = a.get("result") or []
        labels = _choices(result)
        if len(labels) != 1:
            raise ValueError(f"annotation {a.get('id')} has {len(labels)} class choices; "
                             "need exactly one")
        if labels[0] not in classes:
            raise ValueError(unknown_label(labels[0], classes))
        answers.append((a, labels[0], result))
    if len({label for _, label, _ in answers}) > 1:
        raise ValueError("its annotations disagree on the class: "
                         f"{sorted({label for _, label, _ in answers})}")
    a, label, result = max(answers, key=lambda t: str(t[0].get("updated_at")
                                                      or t[0].get("created_at") or ""))
    regions = [_region(item, info["size"]) for item in result
               if item.get("type") in ("rectanglelabels", "brushlabels")]
    mask = np.logical_or.reduce(regions) if regions else None
    return Annotation(xal_id, label, mask, _annotator(a),
                      a.get("updated_at") or a.get("created_at"))


def parse_export(source, expected, classes, imported=None):
    """Labels and ROI masks from a Label Studio JSON export, all or nothing.

    Parameters
    ----------
    source : path-like, str of JSON, or list of task dicts
    expected : dict
        ``xal_id -> {"image_url": str, "size": (width, height)}`` for the batch.
    classes : sequence of str
    imported : dict, optional
        ``xal_id -> (label, where)`` of images imported before: their tasks
        (a Label Studio project used for several batches) are skipped when
        their label is unchanged, and refused otherwise.

    Returns
    -------
    list of Annotation
        One per labelled task (tasks without a finished annotation are left out).

    Raises
    ------
    AnnotationImportError
        Listing every task that does not fit; nothing is returned then.
    """
    tasks = source
    if not isinstance(source, list):
        text = str(source)
        if not text.lstrip().startswith("["):
            from pathlib import Path

            path = Path(source)
            if path.stat().st_size > MAX_EXPORT_BYTES:
                raise AnnotationImportError(f"{path} is larger than {MAX_EXPORT_BYTES} bytes.")
            text = path.read_text(encoding="utf-8")
        try:
            tasks = json.loads(text)
        except ValueError as exc:
            raise AnnotationImportError(f"The export is not valid JSON: {exc}") from None
    if not isinstance(tasks, list):
        raise AnnotationImportError("A Label Studio JSON export is a list of tasks.")
    if not tasks:
        raise AnnotationImportError("The export holds no tasks.")
    out, seen, problems = [], set(), []
    for n, task in enumerate(tasks):
        name = f"task {task.get('id', n) if isinstance(task, dict) else n}"
        try:
            ann = _one_task(task, expected, classes, imported)
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"{name}: {exc}.")
            continue
        if ann is None:
            continue
        if ann.xal_id in seen:
            problems.append(f"{name}: image id {ann.xal_id} appears in two tasks.")
            continue
        seen.add(ann.xal_id)
        out.append(ann)
    _raise_all(problems, "The Label Studio export")
    if not out:
        raise AnnotationImportError("No task of the export has a finished annotation.")
    return out


def read_label_csv(path, expected, classes, imported=None):
    """Labels and box ROIs from a filled ``to_label.csv``, all or nothing.

    Columns ``xal_id``, ``image``, ``label`` and optionally ``x_min, y_min, x_max,
    y_max`` (pixels of the image; all four or none). Rows with an empty ``label``
    are not labelled yet and are left out. The whole file is checked first; the
    error lists every bad line.
    """
    out, problems = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise AnnotationImportError(f"Could not read {path}: {exc}") from exc
    for line, row in enumerate(rows, start=2):
        try:
            answer = _csv_row(row, expected, classes, imported)
        except ValueError as exc:
            problems.append(f"line {line}: {exc}.")
            continue
        if answer is None:
            continue
        if any(a.xal_id == answer.xal_id for a in out):
            problems.append(f"line {line}: image id {answer.xal_id} appears twice.")
            continue
        out.append(answer)
    _raise_all(problems, str(path))
    if not out:
        raise AnnotationImportError(f"{path} has no labelled row.")
    return out


def _csv_row(row, expected, classes, imported=None):
    """The Annotation of one filled CSV row (None when not labelled yet, or imported before)."""
    label = (row.get("label") or "").strip()
    if not label:
        return None
    try:
        xal_id = int(row.get("xal_id", ""))
    except (TypeError, ValueError):
        raise ValueError(f"xal_id {row.get('xal_id')!r} is not an id") from None
    if xal_id not in expected and imported and xal_id in imported:
        _check_unchanged(xal_id, [label], imported)
        return None
    if xal_id not in expected:
        raise ValueError(_not_in_batch(xal_id, expected))
    if label not in classes:
        raise ValueError(unknown_label(label, classes))
    coords = [(row.get(k) or "").strip() for k in ("x_min", "y_min", "x_max", "y_max")]
    mask = None
    if any(coords):
        width, height = expected[xal_id]["size"]
        try:
            box = np.array([[float(v) for v in coords]])
            mask = boxes_to_masks([box], (height, width))[0]
        except ValueError as exc:
            raise ValueError(f"box {coords}: {exc}") from None
    return Annotation(xal_id, label, mask, None, None)


def source_ids(source):
    """The image ids (``xal_id``) a Label Studio export or filled CSV refers to.

    A lenient first look, to tell the user which batch a file belongs to: what
    cannot be read is left out (the import itself reports it).
    """
    from pathlib import Path

    path, ids = Path(source), set()
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as f:
                values = [row.get("xal_id") for row in csv.DictReader(f)]
        else:
            if path.stat().st_size > MAX_EXPORT_BYTES:
                return ids
            tasks = json.loads(path.read_text(encoding="utf-8"))
            values = [t.get("data", {}).get("xal_id") for t in tasks
                      if isinstance(t, dict) and isinstance(t.get("data"), dict)]
    except (OSError, UnicodeDecodeError, csv.Error, ValueError, TypeError, AttributeError):
        return ids
    for value in values:
        try:
            ids.add(int(value))
        except (TypeError, ValueError):
            continue
    return ids


class LabelStudioClient:
    """A minimal client of Label Studio's HTTP API (1.23), standard library only.

    It authenticates as an API client does since legacy tokens were turned off:
    it logs in with e-mail and password, creates a personal access token (a JWT
    refresh token) and sends short-lived access tokens (``Bearer``). Pass
    ``token=`` to use an existing personal access token instead of a password.

    Parameters
    ----------
    url : str
        E.g. ``"http://127.0.0.1:8080"``.
    email, password : str, optional
    token : str, optional
        A personal access token from the Label Studio UI (Account -> Personal Access Token).
    """

    def __init__(self, url, email=None, password=None, token=None):
        import http.cookiejar
        import urllib.parse
        import urllib.request

        self.url = url.rstrip("/")
        if token is None:
            if email is None or password is None:
                raise ValueError("Give email and password, or a personal access token.")
            jar = http.cookiejar.CookieJar()
            opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
            opener.open(f"{self.url}/user/login/").read()
            form = urllib.parse.urlencode({"csrfmiddlewaretoken": self._csrf(jar),
                                           "email": email, "password": password}).encode()
            opener.open(urllib.request.Request(f"{self.url}/user/login/", data=form, headers={
                "Referer": f"{self.url}/user/login/"})).read()
            token = self._read(opener.open(urllib.request.Request(
                f"{self.url}/api/token/", data=b"{}", method="POST", headers={
                    "X-CSRFToken": self._csrf(jar), "Referer": f"{self.url}/",
                    "Content-Type": "application/json"})))["token"]
        self.token = token

    @staticmethod
    def _csrf(jar):
        for cookie in jar:
            if cookie.name == "csrftoken":
                return cookie.value
        raise ConnectionError("Label Studio sent no CSRF cookie; is this a Label Studio server?")

    @staticmethod
    def _read(response):
        with response as r:
            return json.loads(r.read() or b"null")

    def _access(self):
        import urllib.request

        return self._read(urllib.request.urlopen(urllib.request.Request(
            f"{self.url}/api/token/refresh/", data=json.dumps({"refresh": self.token}).encode(),
            headers={"Content-Type": "application/json"})))["access"]

    def request(self, method, path, body=None):
        """One authenticated JSON request; returns the decoded answer."""
        import urllib.request

        return self._read(urllib.request.urlopen(urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {self._access()}",
                     "Content-Type": "application/json"})))

    def create_project(self, title, label_config_xml):
        """Create a project; returns its id."""
        return self.request("POST", "/api/projects",
                            {"title": title, "label_config": label_config_xml})["id"]

    def import_tasks(self, project, tasks):
        """Import task dicts (``tasks.json``); returns Label Studio's counts."""
        return self.request("POST", f"/api/projects/{project}/import", tasks)

    def tasks(self, project, page_size=1000):
        """Every task of the project, page by page."""
        out, page = [], 1
        while True:
            answer = self.request("GET", f"/api/tasks?project={project}&page={page}"
                                         f"&page_size={page_size}&fields=all")
            tasks = answer["tasks"] if isinstance(answer, dict) else answer
            out += tasks
            total = answer.get("total", len(out)) if isinstance(answer, dict) else len(out)
            if not tasks or len(out) >= total:
                return out
            page += 1

    def annotate(self, task_id, result):
        """Post one annotation (a list of result items) to a task."""
        return self.request("POST", f"/api/tasks/{task_id}/annotations/", {"result": result})

    def export(self, project):
        """The JSON export of the project's annotated tasks (what :func:`parse_export` reads)."""
        return self.request("GET", f"/api/projects/{project}/export?exportType=JSON")

    # --- what a live campaign needs (``xal campaign connect`` and its server) -------------
    def projects(self):
        """Every project this account sees."""
        page = self.request("GET", "/api/projects?page_size=10000")
        return page["results"] if isinstance(page, dict) else page

    def project(self, project):
        return self.request("GET", f"/api/projects/{project}")

    def update_project(self, project, **fields):
        return self.request("PATCH", f"/api/projects/{project}", fields)

    def task_data(self, project):
        """``(task id, data)`` of every task of the project."""
        return [(t["id"], t.get("data") or {}) for t in self.tasks(project)]

    def ml_backends(self, project):
        return self.request("GET", f"/api/ml?project={project}")

    def add_ml_backend(self, project, url, title, password=None):
        """Register an ML backend; with ``password``, Label Studio sends it as HTTP basic
        authentication (user ``xal``) with every request."""
        auth = ({"auth_method": "BASIC_AUTH", "basic_auth_user": "xal",
                 "basic_auth_pass": password} if password else {"auth_method": "NONE"})
        return self.request("POST", "/api/ml", {"url": url, "project": project,
                                                "title": title, "is_interactive": False,
                                                **auth})

    def webhooks(self, project):
        return self.request("GET", f"/api/webhooks?project={project}")

    def create_webhook(self, project, url, headers):
        return self.request("POST", "/api/webhooks", {
            "project": project, "url": url, "send_payload": True,
            "send_for_all_actions": True, "headers": headers, "is_active": True})

    def update_webhook(self, webhook, **fields):
        return self.request("PATCH", f"/api/webhooks/{webhook}", fields)

    def local_storages(self, project):
        return self.request("GET", f"/api/storages/localfiles?project={project}")

    def add_local_storage(self, project, path, title):
        """Let the project's annotators see the image files under ``path`` (Label Studio
        serves a local file only inside such a storage); nothing is synced from it."""
        return self.request("POST", "/api/storages/localfiles", {
            "project": project, "path": str(path), "title": title, "use_blob_urls": False,
            "regex_filter": ""})

    def import_predictions(self, project, predictions):
        """Bulk-create predictions (``{"task", "result", "score", "model_version"}`` each)."""
        return self.request("POST", f"/api/projects/{project}/import/predictions", predictions)

    def model_versions(self, project):
        """The model versions the project's predictions carry."""
        found = self.request("GET", f"/api/projects/{project}/model-versions/")
        return list(found) if isinstance(found, dict) else [
            v.get("model_version") if isinstance(v, dict) else v for v in found]

    def push_predictions(self, project, version, predict, chunk=500, replaces=None):
        """Give every task of the project a prediction of model ``version`` and make it
        the project's current version, so that the Data Manager's prediction score and
        the uncertainty-sampling queue read it.

        ``predict(tasks)`` answers a list of ``{"id", "data"}`` task dicts with one
        ``{"result", "score"}`` per task (an ML backend's ``/predict``). The predictions
        are sent in bulk: asking Label Studio to fetch them from the backend itself
        (Data Manager: Retrieve Predictions) stores them one by one, about 25 times
        slower (docs/campaign.rst). Then the predictions of other versions whose name
        starts with ``replaces`` are deleted, so the annotator sees one prediction per
        task. Returns the number of tasks.
        """
        tasks = self.task_data(project)
        for start in range(0, len(tasks), chunk):
            part = tasks[start:start + chunk]
            results = predict([{"id": i, "data": data} for i, data in part])
            self.import_predictions(project, [
                {"task": i, "result": r["result"], "score": r["score"], "model_version": version}
                for (i, _), r in zip(part, results)])
        self.update_project(project, model_version=version)
        if replaces:
            for old in self.model_versions(project):
                if old and old != version and str(old).startswith(replaces):
                    self.request("DELETE", f"/api/projects/{project}/model-versions/",
                                 {"model_version": old})
        return len(tasks)
