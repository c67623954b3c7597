"""Connecting a campaign to a Label Studio project (``xal campaign connect``).

One call sets up everything the live loop needs, and a second call changes nothing:
the project (created with the campaign's label configuration, or reused: the one
recorded in ``labelstudio.json``, else one of the same title), a task for every pool
image it lacks, a local-files storage of the pool's folder (Label Studio serves a
file to the browser only inside one), the campaign's ML backend and the webhook to it
(with the backend's token, if it has one), uncertainty sampling as the project's queue,
and the current predictions. What it set up is recorded in ``labelstudio.json`` (no secret in it).
"""

import json
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

from .._persist import atomic_write, read_json
from ..labelstudio import CLASS_TAG, LabelStudioClient, label_config, scan_words
from ._common import CampaignError, now
from ._live import VERSION_PREFIX, pool_url

#: What ``connect`` set up, in the campaign folder.
CONNECTION = "labelstudio.json"
#: Tasks sent to Label Studio per import request.
TASK_CHUNK = 1000


def read_connection(folder):
    """The Label Studio project a campaign is connected to (a dict), or None."""
    path = Path(folder) / CONNECTION
    return read_json(path) if path.is_file() else None


def task_data(campaign, xal_id):
    """A live task's data: the pool image itself (Label Studio's local-file URL), its id,
    and which scan it is (its file as given at init and the manifest's id)."""
    original = str(Path(campaign.config["pool_root"]) / campaign.pool["images"][xal_id])
    manifest_id = campaign._manifest_id(xal_id)
    return {"image": pool_url(campaign, xal_id), "xal_id": int(xal_id),
            "original_image": original, "manifest_id": manifest_id,
            "scan": scan_words(original, manifest_id)}


def project_classes(xml):
    """The class names of a labelling configuration (its ``Choices`` named ``label``)."""
    try:
        root = ET.fromstring(xml or "<View/>")
    except ET.ParseError:
        return None
    for choices in root.iter("Choices"):
        if choices.get("name") == CLASS_TAG:
            return [c.get("value") for c in choices.iter("Choice")]
    return None


def _ask_backend(backend_url, token, path, body=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data, headers = json.dumps(body).encode(), dict(headers, **{
            "Content-Type": "application/json"})
    with urllib.request.urlopen(urllib.request.Request(
            backend_url.rstrip("/") + path, data=data, headers=headers), timeout=600) as r:
        return json.loads(r.read())


def backend_version(backend_url, token=None):
    """The model version the backend at ``backend_url`` serves (its ``/health``)."""
    try:
        return _ask_backend(backend_url, token, "/health")["model_version"]
    except (OSError, ValueError, KeyError) as exc:
        raise CampaignError(f"The campaign's backend does not answer at {backend_url} "
                            f"({exc}); start it first: xal campaign serve FOLDER") from None


def connect(campaign, url, api_key, backend_url, token=None, title=None, client=None):
    """Create or reuse the Label Studio project of ``campaign`` and wire it to the backend.

    Parameters
    ----------
    campaign : Campaign
    url : str
        Label Studio, e.g. ``"http://localhost:8080"``.
    api_key : str
        A personal access token of a Label Studio account (Account & Settings).
    backend_url : str
        Where Label Studio reaches ``xal campaign serve`` (``http://localhost:9090``).
    token : str, optional
        The backend's token, if it was started with one: Label Studio then sends it with
        every call (basic authentication for the backend, a header for the webhook).
    title : str, optional
        The project's title; default ``"xal campaign <folder name>"``.

    Returns
    -------
    dict
        ``project``, ``title``, ``actions`` (what was created or changed, in words;
        empty when everything was in place), ``n_tasks`` and ``model_version``.
    """
    version = backend_version(backend_url, token)  # refuse before changing anything
    client = client or LabelStudioClient(url, token=api_key)
    try:
        return _connect(campaign, url, client, backend_url, token, title, version)
    except urllib.error.HTTPError as exc:
        said = exc.read()[:300].decode("utf-8", "replace")
        hint = " (check the API key)" if exc.code in (401, 403) else ""
        raise CampaignError(f"Label Studio at {url} refused {exc.url}: {exc.code} "
                            f"{exc.reason}{hint}: {said}") from None
    except urllib.error.URLError as exc:
        raise CampaignError(f"Label Studio does not answer at {url} ({exc.reason}).") from None


def _connect(campaign, url, client, backend_url, token, title, version):
    actions, known = [], read_connection(campaign.folder)
    title = title or (known or {}).get("title") or f"xal campaign {campaign.folder.resolve().name}"
    project = None
    if known and known.get("url") == url.rstrip("/"):
        try:
            project = client.project(known["project"])
        except urllib.error.HTTPError:
            project = None  # deleted in Label Studio: find or make another
    if project is None:
        project = next((p for p in client.projects() if p.get("title") == title), None)
    if project is None:
        project = client.project(client.create_project(
            title, label_config(campaign.classes, overlay=False)))
        actions.append(f"created project {project['id']} ({title!r})")
    classes = project_classes(project.get("label_config"))
    if classes is not None and sorted(classes) != sorted(campaign.classes):
        raise CampaignError(f"Label Studio project {project['id']} ({project.get('title')!r}) "
                            f"has the classes {classes}, the campaign {campaign.classes}; "
                            "connect to another project (--title) or fix its labelling "
                            "configuration.")
    pid = project["id"]
    tasks = client.task_data(pid)
    have = set()
    for task_id, data in tasks:
        if "xal_id" not in data:
            continue
        xal_id = int(data["xal_id"])
        if xal_id >= len(campaign.pool["images"]) or data.get("image") != pool_url(campaign,
                                                                                  xal_id):
            raise CampaignError(f"Label Studio project {pid} task {task_id} names pool image "
                                f"{xal_id} by another file ({data.get('image')!r}): it belongs "
                                "to another campaign; connect to another project (--title).")
        have.add(xal_id)
    missing = [i for i in range(len(campaign.pool["images"])) if i not in have]
    for start in range(0, len(missing), TASK_CHUNK):
        client.import_tasks(pid, [{"data": task_data(campaign, i)}
                                  for i in missing[start:start + TASK_CHUNK]])
    if missing:
        actions.append(f"imported {len(missing)} pool images as tasks")
    pool_root = str(Path(campaign.config["pool_root"]).resolve())
    if not any(str(Path(st.get("path", "")).resolve()) == pool_root
               for st in client.local_storages(pid)):
        client.add_local_storage(pid, pool_root, "xal campaign pool")
        actions.append(f"let the project show the pool's files ({pool_root})")
    backend_url = backend_url.rstrip("/")
    backends = client.ml_backends(pid)
    backend = next((b for b in backends if b.get("url", "").rstrip("/") == backend_url), None)
    if backend is None:
        backend = client.add_ml_backend(pid, backend_url, "xal-sklearn", password=token)
        actions.append(f"registered the ML backend {backend_url}")
    hook_url = backend_url + "/webhook"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    hook = next((h for h in client.webhooks(pid) if h.get("url") == hook_url), None)
    if hook is None:
        hook = client.create_webhook(pid, hook_url, headers)
        actions.append(f"added the webhook {hook_url}")
    elif (hook.get("headers") or {}) != headers or not hook.get("is_active", True):
        client.update_webhook(hook["id"], headers=headers, is_active=True)
        actions.append(f"set the webhook {hook_url}'s authorisation")
    if project.get("sampling") != "Uncertainty sampling":
        client.update_project(pid, sampling="Uncertainty sampling",
                              show_collab_predictions=True)
        actions.append("set the queue to uncertainty sampling (lowest prediction score first)")
    if project.get("model_version") != version:
        client.push_predictions(pid, version, lambda tasks: _ask_backend(
            backend_url, token, "/predict", {"tasks": tasks})["results"],
            replaces=VERSION_PREFIX)
        actions.append(f"gave the tasks the backend's predictions of {version}")
    record = {"url": url.rstrip("/"), "project": pid, "title": project.get("title", title),
              "ml_backend": backend.get("id"), "webhook": hook.get("id"),
              "backend_url": backend_url, "token": bool(token)}
    if {k: v for k, v in (known or {}).items() if k != "connected"} != record:
        atomic_write(campaign.folder / CONNECTION,
                     json.dumps(dict(record, connected=now()), indent=1))
    return {"project": pid, "title": record["title"], "actions": actions,
            "n_tasks": len(tasks) + len(missing), "model_version": version}
