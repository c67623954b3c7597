"""One process at a time per campaign folder: an advisory lock on ``FOLDER/.lock``.

``xal campaign serve`` holds it while it runs; ``query``, ``import``, ``pretrain`` and
``retrain`` hold it while they change the folder, so a second process is refused with
a message naming the holder instead of interleaving writes. The lock is the kernel's
(``flock``): it ends with the process however the process ends, so a killed server
leaves no stale lock behind. Within one process it is re-entrant (the server's threads
call the same methods), and those threads serialise through their own lock.
"""

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

from ._common import CampaignError

_HELD = {}  # resolved folder -> [file object, depth]
_GUARD = threading.Lock()


def _try_lock(f):
    if sys.platform == "win32":  # pragma: no cover - CI runs on Linux
        import msvcrt

        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _holder(path):
    try:
        who = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        who = {}
    if not who:
        return "another process"
    return (f"another xal process (pid {who.get('pid', '?')}, {who.get('what', '?')} since "
            f"{who.get('since', '?')})")


@contextlib.contextmanager
def hold(folder, what):
    """Hold the campaign folder's lock for the block, or raise :class:`CampaignError`.

    Parameters
    ----------
    folder : path-like
    what : str
        What this process does, written into the lock file for the message another
        process gets (``"xal campaign serve on 127.0.0.1:9090"``).
    """
    key = str(Path(folder).resolve())
    with _GUARD:
        held = _HELD.get(key)
        if held is not None:
            held[1] += 1
        else:
            path = Path(key) / ".lock"
            f = open(path, "a+")
            try:
                _try_lock(f)
            except OSError:
                f.close()
                raise CampaignError(
                    f"{folder} is in use by {_holder(path)}; two processes cannot change one "
                    "campaign. Stop the other one (a campaign server: Ctrl-C), or wait for "
                    "it to finish, then try again.") from None
            f.seek(0)
            f.truncate()
            f.write(json.dumps({"pid": os.getpid(), "what": what,
                                "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
            f.flush()
            _HELD[key] = [f, 1]
    try:
        yield
    finally:
        with _GUARD:
            entry = _HELD[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _HELD[key]
                entry[0].seek(0)
                entry[0].truncate()
                entry[0].close()  # closing the descriptor releases the lock
