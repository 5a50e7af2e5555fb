"""Turning a user's mistake into one line (no traceback).

A user error is a bad override or value (Hydra/OmegaConf composition
errors, `ConfigError`) or unusable data (`DataError`). Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

from typing import Optional

from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf.errors import OmegaConfBaseException



class UserError(Exception):
    """A mistake in the user's config or data; `str(e)` is one line.

    Subclasses: `study.config.ConfigError`, `study.data.DataError`. Kept free
    of torch imports so that a bad override is reported in a fraction of a
    second.
    """


USER_ERRORS = (UserError, HydraException, MissingConfigException,
               OverrideParseException, OmegaConfBaseException)


class UserExit(SystemExit):
    """Raised from a job for a user error: a SystemExit passes through Hydra's
    job runner (which would print the failing overrides and re-raise an
    ordinary exception) and stops the sweep; `study/run.py` prints the line."""

    def __init__(self, message: str) -> None:
        super().__init__(2)
        self.message = message


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
    for i, err in enumerate(chain):
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
