"""Heartbeats: the sweep's settings for them, and the daemon threads that beat
while a batch of trials runs (Heartbeat) or a confirmation runs (lock.ClaimBeat)
(docs/scaling.md: One study, many machines)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import optuna
from optuna.trial import Trial

from study.errors import UserError

from .storage import trial_id

log = logging.getLogger("study.tune")


@dataclass(frozen=True)
class BeatSettings:
    """`hydra.sweeper.heartbeat_interval` and `grace_period`, checked."""

    interval: Optional[int]  # seconds between beats; None: no heartbeat
    grace_period: Optional[int] = None  # None: twice the interval

    def __post_init__(self) -> None:
        if self.interval is not None and self.interval < 1:
            raise UserError(f"hydra.sweeper.heartbeat_interval={self.interval} is not allowed: "
                            "null (no heartbeat) or an integer >= 1 (seconds)")
        if self.grace_period is not None and (self.interval is None or self.grace_period < self.interval):
            raise UserError(f"hydra.sweeper.grace_period={self.grace_period} is not allowed: null (twice "
                            "heartbeat_interval) or an integer >= heartbeat_interval (seconds)")

    @property
    def grace(self) -> Optional[int]:
        """Seconds without a beat after which a sweep counts as dead; None without heartbeats."""
        if not self.interval:
            return None
        return self.grace_period if self.grace_period is not None else 2 * self.interval

    @property
    def poll(self) -> float:
        """Seconds between looks at a study while waiting for other sweeps."""
        return float(min(self.interval or 5, 5))


class Beating:
    """A daemon thread that runs `_beat` while the `with` block runs (and
    only where `interval` is set); it dies with the sweep, and so do the beats."""

    name = "beat"

    def __init__(self, interval: Optional[int]) -> None:
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._beat, daemon=True, name=self.name)

    def _beat(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        if self.interval:
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()


class Heartbeat(Beating):
    """Records a heartbeat for each trial of a batch while its jobs run.

    Optuna beats only inside `study.optimize`; an ask/tell sweep must do it
    itself, or every trial would look dead to the other sweeps after
    `grace_period`.
    """

    name = "optuna-heartbeat"

    def __init__(self, storage: optuna.storages.BaseStorage, trials: Sequence[Trial]) -> None:
        interval = storage.get_heartbeat_interval() if isinstance(storage, optuna.storages.RDBStorage) else None
        self.storage = storage
        self.ids = [trial_id(storage, t.study, t.number) for t in trials] if interval else []
        super().__init__(interval)

    def _beat(self) -> None:
        while True:
            for tid in self.ids:
                try:
                    self.storage.record_heartbeat(tid)
                except Exception as e:  # a lost connection: the next beat tries again
                    log.warning("heartbeat of trial id %d not recorded: %s", tid, e)
            if self.stop.wait(self.interval):
                return
