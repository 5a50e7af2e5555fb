"""A user's mistake, or an environment that cannot work, is one line: `error: ...`
naming the key and what is allowed, exit status 2, no traceback, no run dir,
nothing trained. The end-to-end checks run `study/run.py` as users do; the
rest call the pieces (validate, describe_user_error) directly."""

from __future__ import annotations

import pickle

import pytest

from helpers import run_cli, tiny_overrides
from study.config import compose_config, validate
from study.errors import ConfigError, UserError, UserExit, describe_user_error


def all_subclasses(cls: type) -> set[type]:
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


# ------------------------------------------------------------------ pickling


def user_errors() -> list[BaseException]:
    """One instance of every user error class the study defines."""
    from hydra_plugins.bn_study_sweeper.pruning import PrunerError
    from study.mnist_files import DataError

    import errno

    from study.errors import OutputError

    return [UserError("a plain one"), ConfigError("model.hidden", [128, 64], "a non-empty list"),
            DataError("data.root=/x cannot be written"), PrunerError("hydra.sweeper.pruner is not allowed: x"),
            OutputError(OSError(errno.ENOSPC, "No space left on device"), "/x/result.json")]


def test_every_user_error_class_pickles_with_its_message():
    errors = user_errors()
    # A new user error class must be added above (and so be checked).
    study_classes = {c for c in all_subclasses(UserError) if c.__module__.startswith(("study", "hydra_plugins"))}
    assert study_classes <= {type(e) for e in errors}
    for e in errors:
        back = pickle.loads(pickle.dumps(e))
        assert type(back) is type(e) and str(back) == str(e) and back.__dict__ == e.__dict__
    config_error = pickle.loads(pickle.dumps(errors[1]))
    assert (config_error.key, config_error.value) == ("model.hidden", "[128,64]")
    exit_ = pickle.loads(pickle.dumps(UserExit("batch_size=0 is not allowed")))
    assert exit_.code == 2 and exit_.message == "batch_size=0 is not allowed"


class NeedsTwo(UserError):
    """A user error whose __init__ takes other arguments than its message."""

    def __init__(self, key: str, why: str) -> None:
        self.key = key
        super().__init__(f"{key}: {why}")


def test_a_subclass_with_its_own_init_pickles_too():
    back = pickle.loads(pickle.dumps(NeedsTwo("lr", "too big")))
    assert type(back) is NeedsTwo and str(back) == "lr: too big" and back.key == "lr"


def _raise_config_error() -> None:
    raise ConfigError("batch_size", 70000, "an integer in [1, 55000]")


def test_a_config_error_raised_in_a_loky_worker_reaches_the_parent():
    from joblib import Parallel, delayed

    with pytest.raises(ConfigError) as e:
        Parallel(n_jobs=2, backend="loky")(delayed(_raise_config_error)() for _ in range(2))
    assert str(e.value) == "batch_size=70000 is not allowed: an integer in [1, 55000]"


# ------------------------------------------------------- config group options


@pytest.mark.parametrize("override, line", [
    ("optimizer=rmsprop", "Could not find 'optimizer/rmsprop': optimizer is one of adam, adamw, sgd"),
    ("data=imagenet", "Could not find 'data/imagenet': data is one of mnist"),
    ("hydra/launcher=nope", "Could not find 'hydra/launcher/nope': hydra/launcher is one of "
     # slurm, submitit_local, submitit_slurm: conf/hydra/launcher/ (hydra_plugins/bn_study_launcher/submitit_support.py)
     + ", ".join(sorted({"basic", "joblib", "packed", "slurm", "submitit_local", "submitit_slurm"}))),
])
def test_a_missing_group_option_lists_what_exists(override, line):
    with pytest.raises(Exception) as e:
        compose_config([override])
    assert describe_user_error(e.value) == line


def test_a_missing_experiment_lists_the_presets_and_their_quick_versions():
    with pytest.raises(Exception) as e:
        compose_config(["experiment=nope"])
    line = describe_user_error(e.value)
    assert line.startswith("Could not find 'experiment/nope': experiment is one of cnn, cnn_max_lr, ")
    assert "deep, ghost" in line and "input_scaling" in line and "notebook" in line and "rnn" in line
    assert line.endswith("; or quick/<name> for each")
    with pytest.raises(Exception) as e:
        compose_config(["experiment=quick/nope"])
    assert describe_user_error(e.value).startswith(
        "Could not find 'experiment/quick/nope': experiment/quick is one of cnn, cnn_max_lr, ")


@pytest.mark.parametrize("overrides, message", [
    (["model.out_features=5"], "model.out_features=5 is not allowed: an integer >= 10 (MNIST's labels are 0..9)"),
    (["model.in_features=100"], "model.in_features=100 is not allowed: 784 (MNIST's 28x28 pixels)"),
])
def test_a_model_that_cannot_take_mnist_is_refused(overrides, message):
    # Left through, out_features=5 crashed in training ("Target out of bounds").
    with pytest.raises(ConfigError) as e:
        validate(compose_config(overrides))
    assert str(e.value) == message


# ------------------------------------------------- batch size and split sizes


@pytest.mark.parametrize("overrides, message", [
    (["batch_size=1000000000"], "batch_size=1000000000 is not allowed: an integer in [1, 55000]: "
                                "at most the training split's 60000 - data.val_size=5000 images"),
    (["batch_size=70000"], "batch_size=70000 is not allowed: an integer in [1, 55000]"),
    (["batch_size=55001", "model.norm=batch"], "batch_size=55001 is not allowed: an integer in [2, 55000]"),
    (["data.val_size=60000"], "data.val_size=60000 is not allowed: an integer in [0, 59999] "
                              "(the rest of the 60000 training images train; 0 trains on all of them)"),
    (["data.val_size=-1"], "data.val_size=-1 is not allowed: an integer in [0, 59999]"),
    (["data.val_size=59999"], "batch_size=64 is not allowed: an integer in [1, 1]: "
                              "at most the training split's 60000 - data.val_size=59999 images"),
    (["data.val_size=59999", "model.norm=batch"], "data.val_size=59999 is not allowed: an integer in [0, 59998] "
                                                  "(the rest of the 60000 training images train, 2+ per batch "
                                                  "with model.norm=batch"),
])
def test_validate_keeps_one_batch_in_the_training_split(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_config(overrides))
    assert str(e.value).startswith(message), str(e.value)


@pytest.mark.parametrize("overrides", [["batch_size=55000"], ["data.val_size=59998", "batch_size=2",
                                                              "model.norm=batch"],
                                       ["data.val_size=0", "objective=train_loss", "batch_size=60000"]])
def test_validate_takes_the_largest_batch_the_split_holds(overrides):
    validate(compose_config(overrides))


# ------------------------------------------- no validation split (val_size=0)


@pytest.mark.parametrize("overrides, message", [
    ([], "objective=val_acc is not allowed: train_loss with data.val_size=0 (there is no validation split, "
         "and test_acc would select on the test set)"),
    (["objective=test_acc"], "objective=test_acc is not allowed: train_loss with data.val_size=0"),
    (["objective=train_loss", "trial.prune=true"],
     "trial.prune=true is not allowed: false with data.val_size=0 (pruning reads each epoch's val_acc)"),
    (["objective=train_loss", "probes.kinds=[grad_norms,activations]"],
     "probes.kinds=[grad_norms,activations] is not allowed: no activations or val_acc with data.val_size=0 "
     "(they read the validation split)"),
    (["objective=train_loss", "probes.kinds=[val_acc]"], "probes.kinds=[val_acc] is not allowed"),
])
def test_without_a_validation_split_nothing_reads_or_selects_on_one(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_config(["data.val_size=0", *overrides]))
    assert str(e.value).startswith(message), str(e.value)


def test_without_a_validation_split_the_probes_that_do_not_read_it_are_allowed():
    validate(compose_config(["data.val_size=0", "objective=train_loss",
                             "probes.kinds=[grad_norms,ics,landscape,train_acc,modes,shift]"]))


@pytest.mark.parametrize("overrides, message", [
    (["probes.stop_at=0.9"], "probes.stop_at=0.9 is not allowed: null, or a validation accuracy in (0, 1] with "
                             "val_acc in probes.kinds"),
    (["probes.kinds=[val_acc]", "probes.stop_at=1.5"], "probes.stop_at=1.5 is not allowed"),
    (["probes.kinds=[val_acc]", "probes.stop_at=0"], "probes.stop_at=0.0 is not allowed"),
])
def test_a_stop_at_target_needs_the_val_acc_probe_and_an_accuracy(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_config(overrides))
    assert str(e.value).startswith(message), str(e.value)


def test_a_batch_larger_than_the_files_training_split_is_refused_before_any_record(tiny_mnist, tmp_path):
    """validate assumes 60,000 training images; smaller files (here 1,200,
    200 of them held out) are checked once read."""
    from study.runner import run_job

    cfg = compose_config([*tiny_overrides(tiny_mnist), "batch_size=1001"])
    validate(cfg)
    with pytest.raises(ConfigError) as e:
        run_job(cfg, tmp_path / "run")
    assert str(e.value).startswith("batch_size=1001 is not allowed: at most the training split's 1000 images "
                                   "(1200 in "), str(e.value)
    assert "data.val_size=200 of them held out" in str(e.value)
    assert not list(tmp_path.rglob("result.json"))


# ------------------------------------------------------------- end to end


def one_error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    return lines[0]


def test_a_data_root_that_cannot_be_created_is_one_line_and_leaves_no_run_dir(tmp_path):
    # data.verify=true: /proc/nope cannot be created (for root too), holds no
    # MNIST, and nothing may be downloaded into it.
    proc = run_cli(["data.root=/proc/nope", "data.verify=true", "threads=1", f"run_index={tmp_path}/idx",
                    f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, timeout=120)
    line = one_error_line(proc)
    assert line.startswith("error: data.root=/proc/nope cannot be written (") and "holds no MNIST files" in line
    assert not (tmp_path / "run").exists()


def test_a_split_too_large_anywhere_in_a_sweep_stops_it_before_any_run(tmp_path, tiny_mnist):
    overrides = [o for o in tiny_overrides(tiny_mnist) if not o.startswith("data.val_size=")]
    proc = run_cli(["-m", *overrides, "data.val_size=200,60000", "epochs=1",
                    f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, timeout=120)
    assert one_error_line(proc).startswith("error: data.val_size=60000 is not allowed: an integer in [0, 59999]")
    assert not list(tmp_path.rglob("result.json"))


def test_an_unknown_optimizer_is_one_line_listing_the_optimizers(tmp_path, tiny_mnist):
    proc = run_cli([*tiny_overrides(tiny_mnist), "optimizer=rmsprop", f"hydra.run.dir={tmp_path}/run"],
                   cwd=tmp_path, timeout=120)
    assert one_error_line(proc) == "error: Could not find 'optimizer/rmsprop': optimizer is one of adam, adamw, sgd"
    assert not (tmp_path / "run").exists()


# ------------------------------------- unusable outputs, storage, launcher (issue 25)


def nothing_written(tmp_path, *names):
    return all(not (tmp_path / n).exists() for n in names) and not list(tmp_path.rglob("result.json"))


@pytest.mark.parametrize("multirun", [False, True])
@pytest.mark.parametrize("where, why", [
    ("afile", "is a file, not a folder"),
    ("afile/sub", "cannot be made: {tmp}/afile is a file"),
    ("/proc/nope/sweep", "cannot be made: /proc cannot be written (read-only or no permission)"),
])
def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path, tiny_mnist, multirun, where, why):
    (tmp_path / "afile").write_text("not a dir")
    out = where if where.startswith("/") else f"{tmp_path}/{where}"
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    proc = run_cli([*(["-m"] if multirun else []), *tiny_overrides(tiny_mnist), "steps=2", f"{key}={out}"],
                   cwd=tmp_path, timeout=120)
    assert one_error_line(proc) == (f"error: {key}={out} {why.format(tmp=tmp_path)}; give {key} a folder that "
                                    "can be written")
    assert (tmp_path / "afile").read_text() == "not a dir" and nothing_written(tmp_path, "outputs")


def test_a_run_index_that_is_a_file_is_one_line(tmp_path, tiny_mnist):
    (tmp_path / "idx").write_text("")
    args = [o for o in tiny_overrides(tiny_mnist) if not o.startswith("run_index=")]
    proc = run_cli(["-m", *args, f"run_index={tmp_path}/idx", "steps=2", f"hydra.sweep.dir={tmp_path}/sweep"],
                   cwd=tmp_path, timeout=120)
    assert one_error_line(proc) == (f"error: run_index={tmp_path}/idx is a file, not a folder; give run_index a "
                                    "folder that can be written")
    assert nothing_written(tmp_path, "sweep")


# study/run.py as users run it without a package (an extra not installed): its import fails.
WITHOUT = """
import runpy, sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_without(packages, args, cwd):
    import os
    import subprocess
    import sys

    from helpers import REPO

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # -W: Hydra warns that the (installed) entry points of a package hidden this way do not load.
    return subprocess.run([sys.executable, "-W", "ignore::UserWarning", "-c", WITHOUT, packages,
                           str(REPO / "study" / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=env)


def tune_args(tiny_mnist, tmp_path, storage):
    return ["-m", *tiny_overrides(tiny_mnist), "steps=2", "hydra/sweeper=optuna", "hydra.sweeper.n_trials=1",
            f"hydra.sweeper.storage='{storage}'", f"hydra.sweep.dir={tmp_path}/sweep"]


def test_a_storage_in_a_folder_that_cannot_be_made_is_one_line(tmp_path, tiny_mnist):
    proc = run_cli(tune_args(tiny_mnist, tmp_path, "sqlite:////proc/nope/x.db"), cwd=tmp_path)
    assert one_error_line(proc) == (
        "error: hydra.sweeper.storage=sqlite:////proc/nope/x.db: cannot make /proc/nope (No such file or "
        "directory); give a database file in a folder that can be written")
    assert nothing_written(tmp_path, "sweep")


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@pytest.mark.skipif(not _has("psycopg"), reason="needs the postgres extra (psycopg)")
def test_a_postgresql_server_that_refuses_connections_is_one_line(tmp_path, tiny_mnist):
    # Port 1 on the loopback: nothing listens there.
    proc = run_cli(tune_args(tiny_mnist, tmp_path, "postgresql://me:secret@127.0.0.1:1/study"), cwd=tmp_path)
    line = one_error_line(proc)
    assert line.startswith("error: hydra.sweeper.storage=postgresql://me:***@127.0.0.1:1/study cannot be opened "
                           "(OperationalError: ") and "Connection refused" in line, line
    assert line.endswith("; start the database server or fix the URL") and "secret" not in line
    assert nothing_written(tmp_path, "sweep")


def test_a_postgresql_storage_without_the_extra_says_how_to_install_it(tmp_path, tiny_mnist):
    proc = run_without("psycopg,psycopg2", tune_args(tiny_mnist, tmp_path, "postgresql://me@127.0.0.1:1/study"),
                       tmp_path)
    assert one_error_line(proc) == ("error: hydra.sweeper.storage=postgresql://me@127.0.0.1:1/study needs the "
                                    "database driver psycopg, which is not installed: uv sync --extra postgres")
    assert nothing_written(tmp_path, "sweep")


@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm", "submitit_local"])
def test_a_submitit_launcher_without_the_extra_says_how_to_install_it(tmp_path, tiny_mnist, launcher):
    proc = run_without("hydra_plugins.hydra_submitit_launcher",
                       ["-m", *tiny_overrides(tiny_mnist), "steps=2", f"hydra/launcher={launcher}",
                        f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path)
    assert one_error_line(proc) == f"error: hydra/launcher={launcher} needs hydra-submitit-launcher: uv sync --extra slurm"
    assert nothing_written(tmp_path, "sweep")


@pytest.mark.skipif(not _has("hydra_plugins.hydra_submitit_launcher"), reason="needs the slurm extra")
@pytest.mark.parametrize("launcher", ["slurm", "submitit_slurm"])
def test_a_slurm_launcher_on_a_machine_without_slurm_is_one_line_and_writes_nothing(tmp_path, tiny_mnist,
                                                                                    launcher):
    import os
    import shutil

    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if not (p and shutil.which("sbatch", path=p)))
    proc = run_cli(["-m", *tiny_overrides(tiny_mnist), "steps=2", f"hydra/launcher={launcher}",
                    f"hydra.sweep.dir={tmp_path}/sweep"], cwd=tmp_path, timeout=120, PATH=path)
    assert one_error_line(proc) == (f"error: hydra/launcher={launcher} needs SLURM, and this machine has none (no "
                                    "sbatch on PATH); launch from a SLURM login node, or use hydra/launcher=packed "
                                    "here")
    assert nothing_written(tmp_path, "sweep")


@pytest.fixture
def read_only_mount(tmp_path):
    """A read-only tmpfs (needs root and mount; skipped elsewhere)."""
    import subprocess

    where = tmp_path / "ro"
    where.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(where)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here")
    yield where
    subprocess.run(["umount", str(where)], capture_output=True)


def test_a_sweep_dir_on_a_read_only_mount_is_one_line(tmp_path, tiny_mnist, read_only_mount):
    proc = run_cli(["-m", *tiny_overrides(tiny_mnist), "steps=2", f"hydra.sweep.dir={read_only_mount}/sweep"],
                   cwd=tmp_path, timeout=120)
    assert one_error_line(proc) == (f"error: hydra.sweep.dir={read_only_mount}/sweep cannot be made: "
                                    f"{read_only_mount} cannot be written (read-only or no permission); give "
                                    "hydra.sweep.dir a folder that can be written")
