"""Whether the sweep that runs a trial lives: by its process on this host (/proc),
by its Optuna heartbeat on any host. Dead sweeps' trials are failed and asked
again; a sweep with nothing left to ask waits for the live ones
(docs/scaling.md: Dead workers, A survivor finishes the study)."""

from __future__ import annotations

import datetime
import logging
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from .accounting import counts_toward_target
from .beats import BeatSettings
from .storage import fail_and_ask_again

log = logging.getLogger("study.tune")

# A RUNNING trial without an owner older than this is from a sweep that died
# between asking it and recording itself on it.
OWNERLESS_STALE_AFTER = datetime.timedelta(minutes=10)


def _proc_stat(pid: int) -> Optional[tuple[str, str]]:
    """(state, start time in clock ticks) of a Linux process; None if unknown."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], fields[19]


def this_sweep() -> dict[str, Any]:
    """Who runs a trial: stored on it so a later sweep can tell a dead owner."""
    stat = _proc_stat(os.getpid())
    return {"host": socket.gethostname(), "pid": os.getpid(), "start": stat[1] if stat else None}


def sweep_is_gone(owner: Any) -> bool:
    """True when the sweep process that owns a RUNNING trial is dead (this host only)."""
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False  # another host (or no owner recorded): cannot tell, leave it
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return False
    stat = _proc_stat(pid)
    if stat is not None:
        state, start = stat
        return state in ("Z", "X") or (owner.get("start") is not None and start != owner["start"])
    if Path("/proc/self/stat").exists():
        return True  # /proc works here and has no such process
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def can_wait_for(t: FrozenTrial, heartbeat_interval: Optional[int]) -> bool:
    """Whether this sweep can tell when another sweep's running trial is dead, and so wait for it:
    on this host by its process; elsewhere by its heartbeat, if both sweeps beat (an owner from before
    the owner recorded its heartbeat beat by default); a trial without an owner by its age."""
    owner = t.user_attrs.get("sweep")
    if not isinstance(owner, dict) or owner.get("host") == socket.gethostname():
        return True
    return bool(heartbeat_interval) and owner.get("heartbeat", "unrecorded") is not None


def fail_dead_trials(storage: optuna.storages.RDBStorage, study: optuna.Study) -> int:
    """Fail the RUNNING trials of dead sweeps, by process on this host, then by
    heartbeat on any host; their params are asked again. Returns how many."""
    return _fail_gone(storage, study) + _fail_stale(storage, study)


def _fail_gone(storage: optuna.storages.RDBStorage, study: optuna.Study) -> int:
    """Fail RUNNING trials whose sweep's process is gone from this host (`status: stale`).

    A stale trial's job may have finished and indexed its run before the
    sweep died: asking the same params again lets the runner reuse that
    run instead of losing it. A RUNNING trial with no owner (a sweep
    killed between ask and recording itself) counts as stale once it is
    older than OWNERLESS_STALE_AFTER.
    """
    n = 0
    now = datetime.datetime.now()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("sweep")
        ownerless_old = (owner is None and t.datetime_start is not None
                         and now - t.datetime_start > OWNERLESS_STALE_AFTER)
        if sweep_is_gone(owner) or ownerless_old:
            fail_and_ask_again(storage, study, t, "stale")
            n += 1
    return n


def _fail_stale(storage: optuna.storages.RDBStorage, study: optuna.Study) -> int:
    """Fail the RUNNING trials whose heartbeat stopped (a sweep dead on any
    host): Optuna's fail_stale_trials, with the storage's
    RetryHeartbeatStaleTrialCallback, which queues their params to be asked
    again. Each gets `status: stale` first."""
    if not storage.get_heartbeat_interval():
        return 0
    before = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    # Private (RDBStorage._get_stale_trial_ids): the stale trials fail_stale_trials is about to fail, so
    # that they carry the sweeper's word for why (a finished trial's attributes cannot be set, and Optuna has
    # no public listing of stale trials).
    for tid in storage._get_stale_trial_ids(storage.get_study_id_from_name(study.study_name)):
        try:
            storage.set_trial_user_attr(tid, "status", "stale")
        except optuna.exceptions.UpdateFinishedTrialError:  # another sweep failed it meanwhile
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    after = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
    return len(before - after)


class OtherSweeps:
    """What a sweep with nothing left to ask does: wait while other sweeps'
    trials run. They end, or their sweep died and they are failed (its
    heartbeat stopped for the grace period, or its process is gone on this
    host) and asked again here. A study with no trial running and no new
    trial over one poll is settled; a running trial this sweep cannot tell
    alive or dead (`blind`) ends the wait."""

    def __init__(self, study_name: str, beat: BeatSettings) -> None:
        self.study_name, self.beat = study_name, beat
        self.blind: list[FrozenTrial] = []
        self.logged = False
        self.trials_seen = -1

    def wait(self, study: optuna.Study, target: int) -> bool:
        """True after waiting one poll (look again); False once the study is settled or blind."""
        trials = study.get_trials(deepcopy=False)
        running = [t for t in trials if t.state == TrialState.RUNNING]
        counted = sum(counts_toward_target(t) for t in trials)
        if not running and (counted >= target or len(trials) == self.trials_seen):
            return False
        self.blind = [t for t in running if not can_wait_for(t, self.beat.interval)]
        if self.blind:
            return False
        if running and not self.logged:
            self.logged = True
            log.info("%s: waiting for %d trial%s of another sweep (a trial whose sweep stops beating "
                     "for %ss is failed and asked again here)", self.study_name, len(running),
                     "s" if len(running) > 1 else "", self.beat.grace)
        self.trials_seen = len(trials)
        time.sleep(self.beat.poll)
        return True
