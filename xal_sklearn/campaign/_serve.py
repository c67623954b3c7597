"""The campaign as a Label Studio ML backend (``xal campaign serve``).

Label Studio calls four endpoints: ``GET /health``, ``POST /setup`` (answered with the
model version), ``POST /predict`` (one prediction per task: the class as ``choices``, a
box as a rectangle, and a ``score`` such that sorting ascending gives the strategy's
order) and ``POST /webhook`` (annotations created, updated or deleted; ``START_TRAINING``).

Built on the standard library's ``http.server`` (a thread per request): the protocol is
four small JSON endpoints, the server listens on the loopback interface for one
project, and a web framework (Flask, FastAPI plus an ASGI server) would add a
dependency and a second configuration surface for nothing this needs. Request logic is
:class:`Backend` (no sockets: the tests call it directly too); :func:`serve` puts it
behind a socket.

Predictions are looked up, never computed per request: after each training the whole
unlabelled pool is ranked and predicted once (:func:`~._live.rank_pool`), and the
ranking is swapped in whole, so every answer comes from one model. Annotations go to
the campaign's journal at once (Label Studio waits one second for a webhook) and a
background thread retrains after every ``retrain_every`` of them, one training at a
time; until the new model and its ranking are saved the previous ones keep serving,
and a failed training leaves them serving and is reported by ``/health``.
"""

import base64
import hmac
import json
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .._names import BACKEND_TOKEN_ENV as TOKEN_ENV
from .._names import DEFAULT_RETRAIN_EVERY, DEFAULT_TOP
from ..labelstudio import prediction_result
from ._campaign import Campaign
from ._common import CampaignError
from ._live import (check_task, labelled_now, rank_pool, read_journal, record_annotation,
                    record_deletion, retrain)
from ._lock import hold

#: Request bodies larger than this are refused (413) before they are read.
MAX_BODY_BYTES = 32 * 2 ** 20
LOOPBACK = ("127.0.0.1", "localhost", "::1")


class RequestError(Exception):
    """A request the backend refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class Backend:
    """The ML backend's request logic for one campaign folder.

    Parameters
    ----------
    folder : path-like
        The campaign folder (made by ``xal campaign init``).
    retrain_every : int, default=10
        Retrain after this many label changes arrived through webhooks.
    token : str, optional
        When given, every request must carry it (``Authorization: Bearer TOKEN`` or
        ``Token TOKEN``, or as the password of HTTP basic authentication, which is how
        Label Studio sends it to an ML backend); compared in constant time.
    top : int, default=50
        Images ranked by the strategy itself (see :func:`~._live.rank_pool`).
    label_studio : callable, optional
        ``label_studio(version, predict)`` gives the connected project's tasks the
        predictions of a new model version (``predict(tasks)``, the ``/predict`` answer's
        results) and makes it the project's current one (returns the number of tasks,
        or None when no project is connected); called after each training.
    log : callable, default=print to stderr
    """

    def __init__(self, folder, retrain_every=DEFAULT_RETRAIN_EVERY, token=None,
                 top=DEFAULT_TOP, label_studio=None, log=None):
        if isinstance(retrain_every, bool) or int(retrain_every) < 1:
            raise CampaignError(f"retrain_every must be a positive integer, got "
                                f"{retrain_every!r}.")
        self.folder, self.retrain_every, self.top = Path(folder), int(retrain_every), top
        self.token, self.label_studio = token, label_studio
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.campaign = Campaign.open(folder)
        self.lock = threading.RLock()  # the campaign's files and this object's fields
        self.training, self.last_error, self.thread = False, None, None
        self.ranking = rank_pool(self.campaign, top=top)

    # --- requests ------------------------------------------------------------------------
    def handle(self, method, path, headers, body):
        """Answer one request: ``(status, dict)``; never raises for a bad request."""
        try:
            self._authorise(headers)
            route = path.split("?", 1)[0].rstrip("/") or "/"
            if route in ("/", "/health") and method == "GET":
                return 200, self.health()
            handlers = {"/setup": self.setup, "/predict": self.predict,
                        "/webhook": self.webhook}
            if route not in handlers:
                raise RequestError(404, f"no endpoint {route}; this ML backend has /health, "
                                        "/setup, /predict and /webhook")
            if method != "POST":
                raise RequestError(405, f"{route} takes POST")
            return 200, handlers[route](self._json(body))
        except RequestError as exc:
            return exc.status, {"error": str(exc)}
        except CampaignError as exc:
            return 400, {"error": str(exc)}
        except Exception as exc:  # a bug: said, logged, and the server goes on
            self.log(f"{_now()} {method} {path} failed:\n{traceback.format_exc()}")
            return 500, {"error": f"{type(exc).__name__}: {exc}"}

    def _authorise(self, headers):
        if self.token is None:
            return
        given = headers.get("Authorization") or ""
        scheme, _, value = given.partition(" ")
        if scheme.lower() == "basic":
            try:
                value = base64.b64decode(value, validate=True).decode().partition(":")[2]
            except ValueError:
                value = ""
        elif scheme.lower() not in ("bearer", "token"):
            value = ""
        if not hmac.compare_digest(value.encode(), self.token.encode()):
            raise RequestError(401, "this backend needs its token (Authorization: Bearer "
                                    "TOKEN, or TOKEN as the basic-auth password)")

    @staticmethod
    def _json(body):
        try:
            value = json.loads(body or b"{}")
        except ValueError as exc:
            raise RequestError(400, f"the body is not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise RequestError(400, "the body must be a JSON object")
        return value

    # --- endpoints -------------------------------------------------------------------------
    def health(self):
        """``status``, the model version serving, whether training runs, the last error."""
        with self.lock:
            waiting = len(read_journal(self.campaign)[0])
            return {"status": "UP", "model_class": "xal-sklearn campaign",
                    "model_version": self.ranking.version,
                    "round": len(self.campaign.state["rounds"]),
                    "n_labelled": len(self.campaign.state["labelled"]),
                    "n_waiting": waiting, "retrain_every": self.retrain_every,
                    "training": self.training, "last_error": self.last_error,
                    "order": self.ranking.method}

    def setup(self, body):
        return {"model_version": self.ranking.version}

    def predict(self, body):
        """One prediction per task, in the tasks' order; all tasks checked first."""
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise RequestError(400, "the body has no list of tasks")
        ranking = self.ranking  # one model for the whole answer
        ids = [check_task(self.campaign, task) for task in tasks]
        results = []
        for xal_id in ids:
            found = ranking.predictions.get(xal_id)
            result = [] if found is None else prediction_result(*found)
            results.append({"model_version": ranking.version, "score": ranking.score(xal_id),
                            "result": result})
        return {"results": results, "model_version": ranking.version}

    def webhook(self, body):
        """Journal an annotation event, and start a training when enough have come."""
        action = body.get("action")
        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            task, annotation = body.get("task"), body.get("annotation")
            if not isinstance(task, dict):
                raise RequestError(400, f"{action} without its task")
            with self.lock:
                found = self.ranking.predictions.get(check_task(self.campaign, task))
                entry = record_annotation(self.campaign, task, annotation,
                                          predicted=None if found is None else found[0])
            words = (f"image {entry['id']} labelled {entry['label']!r}"
                     if entry["label"] is not None else f"image {entry['id']} skipped")
        elif action in ("ANNOTATIONS_DELETED", "ANNOTATION_DELETED"):
            items = body.get("annotations") or ([body["annotation"]]
                                                if isinstance(body.get("annotation"), dict)
                                                else [])
            if not isinstance(items, list) or not all(isinstance(a, dict) for a in items):
                raise RequestError(400, f"{action} without a list of annotations")
            with self.lock:
                gone = record_deletion(self.campaign, [a.get("id") for a in items])
            words = (f"label of image(s) {', '.join(str(e['id']) for e in gone)} removed"
                     if gone else "no label came from these annotations")
        elif action == "START_TRAINING":
            self.log(f"{_now()} Label Studio asked for a training")
            return {"status": "ok", "training": self.start_training(force=True)}
        else:
            return {"status": "ignored", "action": action}
        self.log(f"{_now()} {action}: {words}")
        return {"status": "ok", "training": self.start_training()}

    # --- training ----------------------------------------------------------------------------
    def start_training(self, force=False):
        """Start a training in the background if enough labels wait (any, if ``force``)
        and none runs; returns whether one runs now."""
        with self.lock:
            if self.training:
                return True
            waiting = len(read_journal(self.campaign)[0])
            if waiting == 0 or (waiting < self.retrain_every and not force):
                return False
            self.training = True
            self.thread = threading.Thread(target=self._train, name="xal-training",
                                           daemon=True)
            self.thread.start()
            return True

    def _train(self):
        try:
            while True:
                start = time.time()
                info = retrain(self.campaign, lock=self.lock)
                if info is None:
                    break
                with self.lock:
                    labelled = labelled_now(self.campaign)
                ranking = rank_pool(self.campaign, top=self.top, labelled=labelled)
                with self.lock:
                    self.ranking, self.last_error = ranking, None
                agreement = ("" if info["agreement"] is None else
                             f"; the model had predicted {info['agreement']:.0%} of the "
                             "new labels")
                self.log(f"{_now()} trained {ranking.version} on {info['n_labelled']} labels "
                         f"({info['n_changes']} new or changed) in {time.time() - start:.0f} s"
                         f"{agreement}")
                self._refresh_label_studio(ranking)
                with self.lock:
                    if len(read_journal(self.campaign)[0]) < self.retrain_every:
                        break
        except Exception as exc:  # the last good model keeps serving
            with self.lock:
                self.last_error = f"{type(exc).__name__}: {exc}"
            self.log(f"{_now()} training failed, the previous model keeps serving: "
                     f"{self.last_error}\n{traceback.format_exc()}")
        finally:
            with self.lock:
                self.training = False

    def _refresh_label_studio(self, ranking):
        if self.label_studio is None:
            return
        try:
            n = self.label_studio(ranking.version,
                                  lambda tasks: self.predict({"tasks": tasks})["results"])
            if n is None:
                return
            self.log(f"{_now()} Label Studio has the {n} predictions of {ranking.version}")
        except Exception as exc:  # Label Studio down: the next training tries again
            self.log(f"{_now()} could not give Label Studio the new predictions ({exc}); "
                     "xal campaign connect gives them, or its Data Manager's Actions > "
                     "Retrieve Predictions")

    def wait(self, timeout=None):
        """Wait for a running training to end (tests and shutdown)."""
        thread = self.thread
        if thread is not None:
            thread.join(timeout)


def _now():
    return time.strftime("%H:%M:%S")


class _Handler(BaseHTTPRequestHandler):
    backend = None  # set by serve
    max_body = MAX_BODY_BYTES
    server_version = "xal-campaign"

    def _answer(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _run(self, method):
        length = self.headers.get("Content-Length") or "0"
        try:
            length = int(length)
        except ValueError:
            return self._answer(400, {"error": "Content-Length is not a number"})
        if length > self.max_body:
            self.close_connection = True
            return self._answer(413, {"error": f"the body has {length} bytes; the limit is "
                                               f"{self.max_body}"})
        body = self.rfile.read(length) if length > 0 else b""
        status, payload = self.backend.handle(method, self.path, self.headers, body)
        self._answer(status, payload)

    def do_GET(self):  # noqa: N802 (http.server's names)
        self._run("GET")

    def do_POST(self):  # noqa: N802
        self._run("POST")

    def log_message(self, format, *args):
        if args and str(args[1] if len(args) > 1 else "").startswith(("4", "5")):
            self.backend.log(f"{_now()} {self.address_string()} {format % args}")


def check_host(host, token):
    """Refuse a non-loopback address without a token."""
    if host not in LOOPBACK and not token:
        raise CampaignError(f"--host {host} lets other machines reach the backend; give a "
                            f"token (--token, or the {TOKEN_ENV} environment variable) that "
                            "every request must carry.")


def make_server(backend, host="127.0.0.1", port=9090, max_body=MAX_BODY_BYTES):
    """The HTTP server of ``backend`` (bound, not started: ``server.serve_forever()``).

    A port another program holds is said at once (:class:`CampaignError`)."""
    check_host(host, backend.token)
    handler = type("Handler", (_Handler,), {"backend": backend, "max_body": int(max_body)})
    try:
        return ThreadingHTTPServer((host, int(port)), handler)
    except OSError as exc:
        raise CampaignError(f"Cannot listen on {host}:{port} ({exc.strerror}); is another "
                            "server there? Choose another --port.") from None


def serve(folder, host="127.0.0.1", port=9090, token=None, retrain_every=DEFAULT_RETRAIN_EVERY,
          top=DEFAULT_TOP, max_body=MAX_BODY_BYTES, label_studio=None, log=None):
    """Run the campaign's ML backend until interrupted, holding the folder's lock."""
    check_host(host, token)
    with hold(folder, f"xal campaign serve on {host}:{port}"):
        (log or (lambda line: print(line, file=sys.stderr, flush=True)))(
            f"{_now()} ranking the pool of {folder} with its current model ...")
        backend = Backend(folder, retrain_every, token, top, label_studio, log)
        server = make_server(backend, host, port, max_body)
        backend.log(f"{_now()} serving {folder} on http://{host}:{server.server_port} "
                    f"({backend.ranking.version}, {backend.ranking.method}); retraining "
                    f"after every {backend.retrain_every} labels. Ctrl-C stops.")
        try:
            server.serve_forever()
        finally:  # a training still running is dropped: its labels wait in the journal
            server.server_close()
