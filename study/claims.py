"""Claims on runs: which process is writing a run dir or training a run, so
that a run is trained once at a time and a run whose process died is
trained again (docs/sweeps.md#claims-who-is-writing-a-run). Torch-free."""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

from study.records import now_iso

log = logging.getLogger(__name__)

CLAIM_HEARTBEAT_SECONDS = 30.0
CLAIM_STALE_SECONDS = 600.0
UNREADABLE_STALE_SECONDS = 2 * CLAIM_HEARTBEAT_SECONDS


def _proc_stat(pid: int) -> Optional[tuple[str, str]]:
    """(state, start time in clock ticks since boot) of a local process, or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) "
    return (fields[0], fields[19]) if len(fields) > 19 else None


def owner() -> dict[str, Any]:
    """This process, as its claims name it."""
    stat = _proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": stat[1] if stat else None,
            "claimed_at": now_iso()}


def read_claim(path: Path) -> Optional[dict[str, Any]]:
    """The claim at `path`; None where there is none. A claim being written
    (empty) or unreadable is {} (judged by its age). Claims written before
    this module were `<pid> <time>`: this host's."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return {}
    try:
        claim = json.loads(text)
        return claim if isinstance(claim, dict) else {}
    except ValueError:
        first = text.split()
        if first and first[0].isdigit():
            return {"host": socket.gethostname(), "pid": int(first[0]), "start": None}
        return {}


def is_mine(claim: dict[str, Any]) -> bool:
    me = owner()
    return (claim.get("host"), claim.get("pid"), claim.get("start")) == (me["host"], me["pid"], me["start"])


def pid_alive(pid: int, start: Optional[str]) -> bool:
    """Whether the local process `pid` (started at `start`, where known) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: it exists
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc: the pid exists
    state, started = stat
    return state not in ("Z", "X") and (start is None or started == start)


def is_live(claim: dict[str, Any], path: Path) -> bool:
    """Whether the owner of `claim` (read from `path`) may still be writing."""
    pid = claim.get("pid")
    if isinstance(pid, int) and claim.get("host") == socket.gethostname():
        return pid_alive(pid, claim.get("start"))
    # Another host's claim: alive while refreshed. One being written (empty, or unreadable: damaged) is
    # written within moments of its file's creation and then touched with every refresh (every
    # CLAIM_HEARTBEAT_SECONDS), so one left unreadable and untouched for UNREADABLE_STALE_SECONDS is no
    # live process's.
    limit = CLAIM_STALE_SECONDS if claim else UNREADABLE_STALE_SECONDS
    try:
        return time.time() - Path(path).stat().st_mtime < limit
    except FileNotFoundError:
        return False


def describe(claim: dict[str, Any]) -> str:
    if not claim:
        return (f"a process that is starting (its claim file is empty or unreadable; taken over once it is "
                f"{UNREADABLE_STALE_SECONDS:.0f} s old)")
    return f"pid {claim.get('pid')} on {claim.get('host')} (since {claim.get('claimed_at', '?')})"


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive flock on `folder` (released when this process dies); none
    where the file system has no flock on folders."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(fd)


def take(path: Path, **extra: Any) -> Optional[dict[str, Any]]:
    """Take the claim at `path`. Returns None when this process holds it
    now (taken, taken over from a dead owner, or held already), else the
    live claim of the process that holds it. `extra` is written with it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps({**owner(), **extra}).encode()
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            held = read_claim(path)
            if held is None:
                continue  # released meanwhile: try again
            if is_mine(held):
                return None
            if is_live(held, path):
                return held
            with _folder_lock(path.parent):
                if read_claim(path) != held:  # taken over or released meanwhile
                    continue
                tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(data)
                os.replace(tmp, path)
            log.info("took over the claim %s of %s, which is no longer running", path, describe(held))
            return None
        try:
            os.write(fd, data)
        except BaseException:
            os.close(fd)
            Path(path).unlink(missing_ok=True)
            raise
        os.close(fd)
        return None


def release(path: Path) -> None:
    """Remove this process's claim at `path` (another's is left alone)."""
    claim = read_claim(path)
    if claim is not None and is_mine(claim):
        Path(path).unlink(missing_ok=True)


class Heartbeat:
    """Refresh the mtime of this process's claims while it trains, so that
    other hosts see them alive (`is_live`)."""

    def __init__(self, paths: list[Path], every: float = CLAIM_HEARTBEAT_SECONDS) -> None:
        self.paths, self.every = list(paths), every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="claim-heartbeat", daemon=True)

    def _beat(self) -> None:
        while not self._stop.wait(self.every):
            for p in self.paths:
                with contextlib.suppress(OSError):
                    os.utime(p)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
