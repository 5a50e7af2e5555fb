"""Issue 25: no fault leaves a user stuck. A rerun into the same dirs keeps
what finished and retrains what was killed or damaged; a dir of another
sweep is refused in one line; a full disk leaves no claimed dir without a
record; claims of dead processes are taken over (study/claims.py)."""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from helpers import tiny_overrides
from study import claims
from study.config import compose_config
from study.errors import OutputError, UserError, describe_user_error
from study.records import CLAIM_FILE, RESULT_FILE
from study.reuse import index_claim
from study import runner
from study.runner import Member, claim_dir, run_pack


def cfg_for(tiny_mnist, tmp_path, *overrides):
    return compose_config(tiny_overrides(tiny_mnist) + ["force=false", f"run_index={tmp_path}/index", "steps=3",
                                                        "batch_size=32", *overrides])


def members(tmp_path, seeds=(0, 1, 2)):
    return [Member(s, 0.01, tmp_path / "sweep" / f"{k}_seed={s}") for k, s in enumerate(seeds)]


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def count_training(monkeypatch):
    """How many runs train_pack trains, call by call."""
    calls = []
    real = runner.train_pack

    def counting(cfg, ms, *a, **k):
        calls.append([m.seed for m in ms])
        return real(cfg, ms, *a, **k)

    monkeypatch.setattr(runner, "train_pack", counting)
    return calls


# ------------------------------------------------------------------ claims


def test_a_claim_is_taken_once_and_released(tmp_path):
    path = tmp_path / "x.claim"
    assert claims.take(path) is None and claims.is_mine(claims.read_claim(path))
    assert claims.take(path) is None  # held already by this process
    claims.release(path)
    assert not path.exists()


def test_a_live_local_process_keeps_its_claim(tmp_path):
    path = tmp_path / "x.claim"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        stat = claims._proc_stat(other.pid)
        path.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, "start": stat[1]}))
        held = claims.take(path)
        assert held is not None and held["pid"] == other.pid
        claims.release(path)  # not ours: left alone
        assert path.exists()
    finally:
        other.kill()
        other.wait()
    assert claims.take(path) is None  # its process died: taken over
    assert claims.is_mine(claims.read_claim(path))


def test_a_reused_pid_does_not_keep_a_dead_claim(tmp_path):
    path = tmp_path / "x.claim"
    # This very pid, but a process that started at another time: the claim's owner is gone.
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "start": "1"}))
    assert claims.take(path) is None and claims.is_mine(claims.read_claim(path))


def test_another_hosts_claim_lives_while_refreshed(tmp_path, monkeypatch):
    path = tmp_path / "x.claim"
    path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "start": "5"}))
    assert claims.take(path) is not None
    old = time.time() - claims.CLAIM_STALE_SECONDS - 5
    os.utime(path, (old, old))
    assert claims.take(path) is None


def test_an_unreadable_claim_is_taken_over_once_it_has_stayed_unreadable_a_minute(tmp_path):
    """Empty is a claim being written (its owner writes it at once, then refreshes it); garbage (a disk
    fault) is no live process's: it used to hold the run for CLAIM_STALE_SECONDS (10 min)."""
    path = tmp_path / "x.claim"
    path.write_text("garbage")
    held = claims.take(path)
    assert held == {} and "taken over once it is 60 s old" in claims.describe(held)
    old = time.time() - claims.UNREADABLE_STALE_SECONDS - 1
    os.utime(path, (old, old))
    assert claims.take(path) is None and claims.is_mine(claims.read_claim(path))


def test_an_old_style_claim_of_a_dead_pid_is_stale(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CLAIM_FILE).write_text(f"{dead_pid()} 2026-12-01T00:00:00+00:00\n")
    claim_dir(tmp_path / "run")
    assert claims.is_mine(claims.read_claim(tmp_path / "run" / CLAIM_FILE))


def test_heartbeat_refreshes_the_claims(tmp_path):
    path = tmp_path / "x.claim"
    claims.take(path)
    os.utime(path, (1, 1))
    with claims.Heartbeat([path], every=0.05):
        time.sleep(0.3)
    assert time.time() - path.stat().st_mtime < 5


# --------------------------------------------------------- reruns in place


def test_a_rerun_keeps_finished_runs_and_retrains_killed_and_damaged_ones(tiny_mnist, tmp_path, monkeypatch):
    cfg, ms = cfg_for(tiny_mnist, tmp_path), members(tmp_path)
    first = run_pack(cfg, ms)
    assert [r["status"] for r in first] == ["completed"] * 3
    # seed 1 was killed mid-pack: its dir claimed by a dead process, no record; seed 2's record damaged.
    (ms[1].dir / RESULT_FILE).unlink()
    (ms[1].dir / CLAIM_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": dead_pid(), "start": None}))
    (ms[2].dir / RESULT_FILE).write_text('{"schema_version": 1, "status": "compl')
    for p in (tmp_path / "index").glob("*.json"):
        p.unlink()  # and no index to reuse from: only the dirs themselves say what finished
    calls = count_training(monkeypatch)
    again = run_pack(cfg, ms)
    assert calls == [[1, 2]]
    assert again[0] == first[0]  # kept as it was, not rewritten
    assert json.loads((ms[0].dir / RESULT_FILE).read_text()) == first[0]
    for k in (1, 2):
        rec = json.loads((ms[k].dir / RESULT_FILE).read_text())
        assert rec["status"] == "completed" and "reused_from" not in rec
        assert rec["final"] == first[k]["final"]  # the same run, trained again
        assert claims.is_mine(claims.read_claim(ms[k].dir / CLAIM_FILE))
    calls.clear()
    assert run_pack(cfg, ms) and calls == []  # a third time: nothing to do


def test_a_dir_of_another_config_is_refused_in_one_line(tiny_mnist, tmp_path, monkeypatch):
    ms = members(tmp_path, seeds=(0,))
    run_pack(cfg_for(tiny_mnist, tmp_path), ms)
    before = (ms[0].dir / RESULT_FILE).read_text()
    calls = count_training(monkeypatch)
    with pytest.raises(UserError) as e:
        run_pack(cfg_for(tiny_mnist, tmp_path, "model.hidden=[32]"), ms)
    assert str(e.value) == (f"output dir {ms[0].dir} holds another sweep's run (model.hidden=[128, 64] there, "
                            "[32] here); give this sweep a new hydra.sweep.dir (or hydra.run.dir), or leave it "
                            "out for a new timestamped one")
    assert calls == [] and (ms[0].dir / RESULT_FILE).read_text() == before
    # Launch-side keys (threads, the run index) are no other config: that dir is this run's.
    run_pack(cfg_for(tiny_mnist, tmp_path, "threads=2"), ms)


def test_a_dir_claimed_by_a_live_process_is_not_written(tiny_mnist, tmp_path):
    ms = members(tmp_path, seeds=(0,))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        ms[0].dir.mkdir(parents=True)
        (ms[0].dir / CLAIM_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid,
                                                        "start": claims._proc_stat(other.pid)[1]}))
        with pytest.raises(UserError, match=f"output dir {ms[0].dir} is being written by pid {other.pid}"):
            run_pack(cfg_for(tiny_mnist, tmp_path, "force=true"), ms)
    finally:
        other.kill()
        other.wait()
    assert not (ms[0].dir / RESULT_FILE).exists()


# --------------------------------------------------------------- full disk


def test_a_full_disk_is_one_line_and_leaves_no_claimed_dir_without_a_record(tiny_mnist, tmp_path, monkeypatch):
    real = runner.write_json_atomic
    written = []

    def fills_up(path, obj):
        if path.name == RESULT_FILE and written:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        written.append(path)
        return real(path, obj)

    monkeypatch.setattr(runner, "write_json_atomic", fills_up)
    ms = members(tmp_path)
    with pytest.raises(OutputError) as e:
        run_pack(cfg_for(tiny_mnist, tmp_path), ms)
    assert str(e.value).startswith(f"cannot write {ms[1].dir / RESULT_FILE}: No space left on device; ")
    assert describe_user_error(e.value) == str(e.value)
    assert (ms[0].dir / RESULT_FILE).exists()
    for m in ms[1:]:
        assert not (m.dir / CLAIM_FILE).exists() and not (m.dir / RESULT_FILE).exists()
    assert not list((tmp_path / "index").glob("*.claim"))
    # Space again: the rerun keeps seed 0 and trains the two others.
    monkeypatch.setattr(runner, "write_json_atomic", real)
    calls = count_training(monkeypatch)
    assert [r["status"] for r in run_pack(cfg_for(tiny_mnist, tmp_path), ms)] == ["completed"] * 3
    assert calls == [[1, 2]]


def test_an_os_error_of_a_full_disk_anywhere_is_one_line():
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/x/.hydra/config.yaml")
        except OSError as e:
            raise RuntimeError("wrapped") from e
    except RuntimeError as e:
        assert describe_user_error(e).startswith("cannot write /x/.hydra/config.yaml: No space left on device; ")


# ------------------------------------------------- a run in flight elsewhere


def test_a_run_claimed_by_another_live_process_is_waited_for_then_reused(tiny_mnist, tmp_path, monkeypatch):
    """The index claim of a run another process trains: wait, then reuse its record."""
    cfg = cfg_for(tiny_mnist, tmp_path)
    ms = members(tmp_path, seeds=(0,))
    elsewhere = [Member(0, 0.01, tmp_path / "other" / "0_seed=0")]
    from study.runner import member_config, plain_config

    claim = index_claim(member_config(plain_config(cfg), ms[0]))
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    claim.parent.mkdir(parents=True)
    claim.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid,
                                 "start": claims._proc_stat(other.pid)[1]}))
    calls = count_training(monkeypatch)
    real_wait = runner._wait_for

    def the_other_finishes(waiting, configs, poll=1.0):
        if not waiting:
            return []
        assert list(waiting) == [0] and calls == []
        other.kill()
        other.wait()
        claim.unlink()
        run_pack(cfg, elsewhere, threads=1)  # what the other process did while this one waited
        return real_wait(waiting, configs, poll=0.05)

    monkeypatch.setattr(runner, "_wait_for", the_other_finishes)
    (rec,) = run_pack(cfg, ms)
    assert calls == [[0]]  # trained once, by "the other process"
    assert rec["reused_from"] == str((elsewhere[0].dir / RESULT_FILE).resolve())
