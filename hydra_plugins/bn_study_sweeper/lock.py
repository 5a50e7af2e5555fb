"""The confirmation lock: one sweep of those sharing a study claims its best
trial's confirmation (a study attribute inserted under the storage's unique
key), beats while it confirms, and a dead claimer's claim is taken over
(docs/scaling.md: Exactly one confirmation per study)."""

from __future__ import annotations

import datetime
import json
import logging
import socket
import time
from typing import Any, Callable, Optional, Sequence

import optuna
import sqlalchemy.exc
import sqlalchemy.orm
# Private (Optuna's table of study attributes): Optuna has no public insert-if-absent
# nor compare-and-set, which a claim that exactly one of several sweeps wins needs.
from optuna.storages._rdb.models import StudyUserAttributeModel as StudyAttr
from optuna.trial import FrozenTrial, TrialState

from .beats import Beating, BeatSettings
from .liveness import sweep_is_gone, this_sweep

log = logging.getLogger("study.tune")


def claim_key(trial: int, seeds: Sequence[int]) -> str:
    return f"confirm_claim:{trial}:{','.join(map(str, seeds))}"


def claim_value(heartbeat_interval: Optional[int], beat: int = 0) -> str:
    return json.dumps({"sweep": this_sweep(), "at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                       "heartbeat": heartbeat_interval, "beat": beat})


def _study_id(storage: optuna.storages.RDBStorage, study: optuna.Study) -> int:
    return storage.get_study_id_from_name(study.study_name)


def claim_raw(storage: optuna.storages.RDBStorage, study: optuna.Study, key: str) -> Optional[str]:
    """The stored JSON text of a study attribute (None when unset): what compare_and_set compares."""
    with sqlalchemy.orm.Session(storage.engine) as session:
        row = (session.query(StudyAttr)
               .filter(StudyAttr.study_id == _study_id(storage, study), StudyAttr.key == key).one_or_none())
        return None if row is None else row.value_json


def compare_and_set(storage: optuna.storages.RDBStorage, study: optuna.Study, key: str, old: str,
                    new: str) -> bool:
    """Set a study attribute to `new` only if it still holds `old` (one UPDATE ... WHERE, atomic in the
    database): of several sweeps that take over one claim at once, exactly one gets it."""
    study_id = _study_id(storage, study)
    with sqlalchemy.orm.Session(storage.engine) as session, session.begin():
        n = (session.query(StudyAttr)
             .filter(StudyAttr.study_id == study_id, StudyAttr.key == key, StudyAttr.value_json == old)
             .update({StudyAttr.value_json: new}, synchronize_session=False))
    return n == 1


def claim_confirmation(storage: optuna.storages.RDBStorage, study: optuna.Study, trial: int,
                       seeds: list[int], heartbeat_interval: Optional[int] = None) -> bool:
    """True for exactly one of the sweeps that ask at once: an INSERT of the study attribute
    `confirm_claim:<trial>:<seeds>` under the storage's unique (study, key)
    constraint, in one transaction (Optuna's own set_user_attr updates an
    existing key instead, so two sweeps would both win). A claim left by a
    dead sweep on this host is taken over (compare_and_set)."""
    key = claim_key(trial, seeds)
    value = claim_value(heartbeat_interval)
    study_id = _study_id(storage, study)
    try:
        with sqlalchemy.orm.Session(storage.engine) as session, session.begin():
            session.add(StudyAttr(study_id=study_id, key=key, value_json=value))
        return True
    except sqlalchemy.exc.IntegrityError:
        raw = claim_raw(storage, study, key)
        owner = (json.loads(raw) if raw else {}).get("sweep")
        if raw is not None and owner is not None and sweep_is_gone(owner) \
                and compare_and_set(storage, study, key, raw, value):
            return True
        return False


class ClaimBeat(Beating):
    """While a sweep confirms, it counts the `beat` of its claim up every
    heartbeat interval: a sweep waiting for that confirmation on another
    host sees the count stop when the confirming sweep dies, and takes the
    claim over after the grace period."""

    name = "confirm-claim-beat"

    def __init__(self, storage: optuna.storages.RDBStorage, study: optuna.Study, key: str, value: str,
                 interval: Optional[int]) -> None:
        self.storage, self.study, self.key, self.value = storage, study, key, value
        super().__init__(interval)

    def _beat(self) -> None:
        while not self.stop.wait(self.interval):
            doc = json.loads(self.value)
            new = json.dumps(dict(doc, beat=int(doc.get("beat", 0)) + 1))
            try:
                if not compare_and_set(self.storage, self.study, self.key, self.value, new):
                    log.warning("%s: another sweep took over this confirmation's claim (it saw no beat "
                                "for the grace period)", self.study.study_name)
                    return
                self.value = new
            except Exception as e:  # a lost connection: the next beat tries again
                log.warning("beat of %s not recorded: %s", self.key, e)


def confirm_once(storage: optuna.storages.RDBStorage, study: optuna.Study, best: FrozenTrial, seeds: list[int],
                 beat: BeatSettings, confirm: Callable[[], dict[str, Any]]
                 ) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """The study's one confirmation of its global best (`confirm()` runs it), once per best trial and
    seeds, whichever of several sweeps claims it first; else why not. The others wait for it: it is
    done, or its sweep died (on this host: its process is gone; elsewhere: its claim's beat stopped for
    the grace period) and one of them takes the claim over and confirms."""
    # Queued (WAITING) trials do not count: in a full study nobody may ever ask them.
    busy = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if busy:
        return None, (f"{len(busy)} trial{'s' if len(busy) > 1 else ''} of another sweep still running: "
                      "a sweep that can wait for them confirms the best")
    key = claim_key(best.number, seeds)
    seen: Optional[str] = None
    seen_at = time.monotonic()
    logged = False
    while True:
        done = study.user_attrs.get("confirm")
        if isinstance(done, dict) and done.get("trial") == best.number and done.get("seeds") == seeds:
            return done, "confirmed before" if not logged else "confirmed by another sweep"
        took_over = False
        if not claim_confirmation(storage, study, best.number, seeds, beat.interval):
            raw = claim_raw(storage, study, key)
            claim = json.loads(raw) if raw else {}
            owner = claim.get("sweep") if isinstance(claim.get("sweep"), dict) else {}
            here = owner.get("host") == socket.gethostname()
            if not here and not (beat.interval and claim.get("heartbeat")):
                return None, (f"another sweep (on {owner.get('host')}) is confirming trial {best.number}; "
                              "without heartbeats this sweep cannot wait for it")
            if raw != seen:
                seen, seen_at = raw, time.monotonic()
            elif (not here and raw is not None and time.monotonic() - seen_at > (beat.grace or 0)
                  and compare_and_set(storage, study, key, raw, claim_value(beat.interval))):
                took_over = True
                log.info("%s: the sweep confirming trial %d stopped beating; confirming it here",
                         study.study_name, best.number)
            if not took_over:
                if not logged:
                    logged = True
                    log.info("%s: another sweep (on %s) is confirming trial %d; waiting for it",
                             study.study_name, owner.get("host"), best.number)
                time.sleep(beat.poll)
                continue
        with ClaimBeat(storage, study, key, claim_raw(storage, study, key) or "", beat.interval):
            return confirm(), None
