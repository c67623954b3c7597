"""Saving state without pickle: JSON metadata, numpy arrays, skorch weights.

Nothing here unpickles: arrays load with ``allow_pickle=False``, weights through
skorch's ``load_params`` (``torch.load(weights_only=True)``), and metadata is JSON.
A folder or checkpoint made by someone else can therefore hold data, never code.
Every write is atomic: a crash or kill leaves the previous complete state.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from sklearn.base import clone

__all__ = ["FormatError", "atomic_folder", "atomic_path", "atomic_write", "check_format", "load_net",
           "read_json", "resolve_folder", "rng_from_json", "rng_to_json", "save_net"]


class FormatError(ValueError):
    """A saved state of another kind or format version."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary file name that replaces ``path`` once the block succeeds.

    No half-written file is ever seen under ``path``; on error the temporary file goes.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write(path, data):
    """Write ``data`` (bytes or str) to ``path`` so that no half-written file is ever seen."""
    if isinstance(data, str):
        data = data.encode()
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_folder(path):
    """Yield a temporary folder that replaces ``path`` as a whole once the block succeeds.

    The old folder is moved aside before the new one takes its place and is removed
    after; :func:`resolve_folder` finds it if a crash fell between the two renames.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.new-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def resolve_folder(path):
    """``path``, or the copy :func:`atomic_folder` moved aside if a crash left only that."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    return old if not path.exists() and old.exists() else path


def check_format(meta, kind, version, where):
    """Refuse metadata of another kind or version, naming both."""
    if not isinstance(meta, dict) or meta.get("format") != kind:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise FormatError(f"{where} is not a {kind} (its format is {found!r}).")
    if meta.get("version") != version:
        raise FormatError(f"{where} has {kind} format version {meta.get('version')!r}; this "
                          f"xal-sklearn reads version {version}.")


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FormatError(f"Could not read {path}: {exc}") from exc


# --- networks ------------------------------------------------------------------------

_FITTED_ATTRS = ("n_channels_in_", "image_shape_", "classes_inferred_", "class_weight_")


def save_net(net, path):
    """Weights of a fitted skorch net to ``path`` (skorch ``save_params``), atomically.

    Returns the JSON-able fitted attributes that :func:`load_net` needs besides them.
    """
    with atomic_path(path) as tmp:
        net.save_params(f_params=tmp)
    attrs = {}
    for name in _FITTED_ATTRS:
        if hasattr(net, name):
            value = getattr(net, name)
            attrs[name] = np.asarray(value).tolist() if not isinstance(value, int) else value
    return attrs


def load_net(template, path, attrs):
    """A clone of ``template`` initialised and given the weights saved at ``path``."""
    net = clone(template)
    for name, value in attrs.items():
        if name == "image_shape_":
            value = tuple(value)
        elif name == "classes_inferred_":
            value = np.asarray(value)
        elif name == "class_weight_" and value is not None:
            value = np.asarray(value, dtype=np.float32)
        setattr(net, name, value)
    net.initialize()
    try:
        net.load_params(f_params=str(path))  # torch.load(weights_only=True) inside skorch
    except RuntimeError as exc:
        if not any(w in str(exc) for w in ("size mismatch", "Missing key", "Unexpected key")):
            raise
        mismatch = [line.strip().rstrip(".") for line in str(exc).splitlines()[1:]
                    if line.strip()]
        raise ValueError(
            f"The weights in {path} were saved from a network of another shape than the "
            f"template's {type(net.module_).__name__}: {'; '.join(mismatch[:3])}. Pass the "
            "template the saved network's parameters (a SmallCNN saved before its context "
            "branch existed needs module__context_channels=0).") from None
    return net


# --- random generators ------------------------------------------------------------------

def rng_to_json(rng):
    kind, keys, pos, has_gauss, cached = rng.get_state()
    return [kind, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]


def rng_from_json(rng, state):
    kind, keys, pos, has_gauss, cached = state
    rng.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    return rng
