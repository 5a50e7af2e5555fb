"""A user's mistake as one line, without a traceback (`UserError`,
`describe_user_error`), and the exits with a line of their own
(docs/configuration.md#exit-status)."""

from __future__ import annotations

import errno
import signal
import sys
from enum import Enum
from typing import Any, Optional

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException

from study import CONF_DIR


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    err = cls.__new__(cls)
    BaseException.__init__(err, *args)
    err.__dict__.update(state)
    return err


class UserError(Exception):
    """A mistake in the user's config or data; `str(e)` is one line.

    Subclasses: `ConfigError` (below), `study.mnist_files.DataError`,
    `hydra_plugins.bn_study_sweeper.pruning.PrunerError`. Kept free of torch
    imports so that a bad override is reported in a fraction of a second.
    """

    def __reduce__(self) -> tuple:
        # Rebuilt from its message and attributes, without calling the
        # subclass's __init__ (whose arguments need not be `self.args`): a job
        # that fails in a joblib/loky worker sends its exception back to the
        # launching process, and one that failed to unpickle there made Hydra's
        # JobReturn.__getstate__ recurse for minutes.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


class ConfigError(UserError, ValueError):
    """A user's config mistake; the message is one line naming the key, the
    value and what is allowed. Also importable as `study.config.ConfigError`."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, _show(value), allowed
        super().__init__(f"{key}={self.value} is not allowed: {allowed}")


class OutputError(UserError):
    """An output the file system refuses: a full disk, a read-only mount, no
    permission. One line naming the file and what to do; finished runs stay."""

    def __init__(self, e: OSError, path: Any = None) -> None:
        where = e.filename or path or "an output file"
        super().__init__(f"cannot write {where}: {e.strerror or e}; free space there or give another output dir "
                         "(hydra.sweep.dir, hydra.run.dir, run_index); finished runs are kept and the same "
                         "command goes on from them")


def _show(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and not isinstance(value, str):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


USER_ERRORS = (UserError, HydraException, MissingConfigException,
               OverrideParseException, OmegaConfBaseException)


class ExitWithLine(SystemExit):
    """Ends the process with one line on stderr (printed by `study/run.py`)
    and the class's exit status. A SystemExit passes through Hydra's job
    runner (which would print the failing overrides and re-raise an ordinary
    exception)."""

    status = 1

    def __init__(self, message: str) -> None:
        super().__init__(self.status)
        self.message = message


class UserExit(ExitWithLine):
    """Raised from a job for a user error; stops the sweep. Exit status 2."""

    status = 2


class RunFailed(ExitWithLine):
    """Raised when training crashed: the run's record (status `failed`, with
    the traceback) is written. Exit status 1. Not a user error: the study,
    the data or the machine broke."""

    status = 1


class StudyIncomplete(ExitWithLine):
    """Raised at the end of a tuning sweep whose study still lacks counted
    trials or its confirmation (e.g. another sweep's trials it could not
    wait for). Exit status 3: run the same command again to finish it."""

    status = 3


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return " ".join(text.splitlines()[:1]).strip().rstrip(".")


def _chain(e: BaseException):
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def describe_user_error(e: BaseException) -> Optional[str]:
    """One line for a user error anywhere in the exception chain, else None."""
    chain = list(_chain(e))
    for err in chain:  # our own messages are already one line and name the key
        if isinstance(err, UserError):
            return str(err)
    for err in chain:  # a full disk or read-only mount wherever it was met (Hydra's job files, a log)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return str(OutputError(err))
    for i, err in enumerate(chain):
        if isinstance(err, MissingConfigException) and _choices(err):
            return f"Could not find '{err.missing_cfg_file}': {_choices(err)}"
        if isinstance(err, USER_ERRORS):
            parts = [_first_line(err)]
            # OmegaConf chains a templated copy of its message ('$VALUE'): skip it.
            parts += [_first_line(c) for c in chain[i + 1:]
                      if isinstance(c, OmegaConfBaseException) and "$" not in str(c)]
            full_key = next((getattr(c, "full_key", None) for c in chain[i:]
                             if getattr(c, "full_key", None)), None)
            line = ": ".join(p for p in parts if p)
            if full_key and full_key not in line:
                line += f" (key: {full_key})"
            return line
    return None


def needs_slurm_extra(launcher: str) -> str:
    """The one line for a submitit launcher without hydra-submitit-launcher installed."""
    return f"hydra/launcher={launcher} needs hydra-submitit-launcher: uv sync --extra slurm"


def _choices(err: MissingConfigException) -> str:
    """'optimizer is one of adam, adamw, sgd' for a config group option that
    does not exist (Hydra lists the options on lines of their own, which a
    one-line report would drop), with the presets of sub-folders (quick/<name>)."""
    group = (err.missing_cfg_file or "").rpartition("/")[0]
    folder = CONF_DIR / group
    names = list(err.options or []) or sorted(p.stem for p in folder.glob("*.yaml"))
    if not group or not names:
        return ""
    text = f"{group} is one of {', '.join(names)}"
    subs = sorted(p for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    for sub in subs:
        inside = sorted(p.stem for p in sub.glob("*.yaml"))
        if inside:
            text += f"; or {sub.name}/<name> for " + ("each" if inside == sorted(names) else ", ".join(inside))
    return text


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP (`kill PID`, a scheduler's time limit, a closed terminal), raised in the main thread
    so that it ends as Ctrl-C does. In a sweep (study/run.py) joblib then terminates the workers and their
    claims are released; without it the process died at once and left its workers running as orphans,
    holding their runs' claims, so the same command refused those runs until the orphans were killed by
    hand. The claims suite (study/suite.py) passes it on to the sweep it is running, for the same reason."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def end_like_ctrl_c() -> None:
    """SIGTERM and SIGHUP raise `Terminated` in the main thread (where their action is still the default)."""

    def handler(signum, frame):
        raise Terminated(signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) == signal.SIG_DFL:  # leave a parent's choice (e.g. nohup's ignored SIGHUP)
            signal.signal(sig, handler)


def stopped(e: KeyboardInterrupt) -> int:
    """Print the one line for Ctrl-C, SIGTERM or SIGHUP (`Terminated`) and return the exit status, 128 + the
    signal's number. Finished runs are on disk (atomic records); reuse and resume pick up from there."""
    signum = e.signum if isinstance(e, Terminated) else signal.SIGINT
    what = "interrupted" if signum == signal.SIGINT else "terminated"
    print(f"{what}: finished runs are kept; run the same command again to go on", file=sys.stderr)
    return 128 + signum
