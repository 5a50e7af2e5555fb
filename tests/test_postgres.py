"""Many sweeps on one PostgreSQL study, as on several machines: first starts
at once on a fresh database, a sweep killed on another host (a real one
under `unshare --uts` as root; a stopped heartbeat left in the storage
anywhere), one confirmation per study, and the report from the storage alone.

They run against a real server: BN_STUDY_TEST_POSTGRES names one (a
libpq URL with a user that may create databases; .ci/run starts a
throwaway cluster on 127.0.0.1 and sets it). Each test makes its own
database and drops it. Without the variable, or without the server, they skip.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers import REPO, RUN, tiny_overrides
from hydra_plugins.bn_study_sweeper.accounting import counts_toward_target
from study.claims import CLAIM_STALE_SECONDS

DSN_VARIABLE = "BN_STUDY_TEST_POSTGRES"
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _server() -> str:
    dsn = os.environ.get(DSN_VARIABLE)
    if not dsn:
        pytest.skip(f"no PostgreSQL: set {DSN_VARIABLE} (.ci/run starts one)")
    psycopg = pytest.importorskip("psycopg", reason="the postgres extra: uv sync --extra postgres")
    try:
        psycopg.connect(dsn, connect_timeout=5).close()
    except psycopg.OperationalError as e:
        pytest.skip(f"PostgreSQL at {DSN_VARIABLE} not reachable: {str(e).splitlines()[0]}")
    return dsn


@pytest.fixture
def pg_url():
    """A fresh, empty database on the test server; its SQLAlchemy URL (psycopg 3)."""
    dsn = _server()  # skips without a server or without the postgres extra, before psycopg is imported
    import psycopg

    name = f"bn_study_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = dsn.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sweep_cmd(tmp_path: Path, root: Path, url: str, sweep: str, *extra: str) -> list[str]:
    """One study (lr tuned, 4 trials asked one at a time), its own sweep dir, a shared run index."""
    base = [o for o in tiny_overrides(root) if not o.startswith(("force=", "run_index="))]
    return RUN + ["-m", *base, f"run_index={tmp_path}/.run-index", "hydra.launcher.n_jobs=1",
                  "hydra.callbacks.summary.report=false", "hydra/sweeper=optuna",
                  f"hydra.sweeper.storage={url}", "hydra.sweeper.study_name=shared",
                  "hydra.sweeper.n_jobs=1", "hydra.sweeper.confirm_seeds=[1]", "hydra.sweeper.pruner=null",
                  "lr=tag(log, interval(1e-3, 1.0))", "model.norm=batch", "batch_size=32",
                  f"hydra.sweep.dir={tmp_path / sweep}", *extra]


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}


def study_of(url: str) -> optuna.Study:
    return optuna.load_study(study_name="shared", storage=url)


@pytest.mark.slow
def test_two_sweeps_at_once_on_a_fresh_database_share_one_study_and_confirm_once(tmp_path, tiny_mnist, pg_url):
    """Started together on an empty database (both create Optuna's schema),
    two sweeps fill one study; exactly one of them confirms its global best.
    Then, with every record file gone, the report is built from the storage."""
    cmds = [sweep_cmd(tmp_path, tiny_mnist, pg_url, s, "epochs=1", "hydra.sweeper.n_trials=4") for s in "ab"]
    procs = [subprocess.Popen(c, cwd=tmp_path, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for c in cmds]
    outs = [p.communicate(timeout=400)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outs)
    assert not any("IntegrityError" in o or "studydirection" in o for o in outs)

    study = study_of(pg_url)
    trials = study.get_trials()
    counted = [t for t in trials if counts_toward_target(t)]
    # Each sweep asks only what the study still lacks; two asking in the same
    # instant may each take the last slot (one batch over, documented).
    assert 4 <= len(counted) <= 5 and not [t for t in trials if t.state == TrialState.RUNNING]
    # Each trial draws from a sampler seeded by its own trial number: sweeps that start together do not
    # train the same points twice (seeded per sweep, both drew the same lrs).
    assert len({t.params["lr"] for t in counted}) == len(counted), [t.params for t in counted]
    best = max((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    confirm = study.user_attrs["confirm"]
    assert confirm["trial"] == best.number and confirm["params"] == best.params  # the global best
    claims = [k for k in study.user_attrs if k.startswith("confirm_claim:")]
    assert claims == [f"confirm_claim:{best.number}:1"]
    # One sweep ran the confirmation; the other waited for it and reported it (or, had it ended after it,
    # reported it as confirmed before).
    confirmed = [o for o in outs if "confirm test_acc" in o and "(confirmed before)" not in o
                 and "(confirmed by another sweep)" not in o]
    assert len(confirmed) == 1, outs
    recs = [json.loads(p.read_text()) for s in "ab" for p in (tmp_path / s).glob("*/result.json")]
    assert sum(r["seed"] == 1 for r in recs) == 1  # the confirmation run trained once, in one sweep
    # Record paths in the study are relative to the results root (the dir the sweeps started in).
    assert all(not Path(t.user_attrs["record_path"]).is_absolute() for t in counted)
    assert (tmp_path / counted[0].user_attrs["record_path"]).is_file()

    # From a third machine: no record files at all.
    for s in "ab":
        shutil.rmtree(tmp_path / s)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run([sys.executable, "-m", "analysis", pg_url, "--study", "shared", "--out",
                           str(elsewhere / "report")], cwd=elsewhere, capture_output=True, text=True,
                          timeout=300, env=dict(env(), PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"warning: {len(counted) + 1} run records could not be read"), lines
    md = (elsewhere / "report" / "report.md").read_text()
    assert f"{len(counted)} Optuna trials have no run record" in md
    assert "1 confirmation runs have no run record here" in md
    assert "confirm seed 1" in (elsewhere / "report" / "results.csv").read_text()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs `unshare --uts` (root) to run a sweep under another hostname")
def test_a_sweep_killed_on_another_host_is_found_by_its_heartbeat_and_its_trial_retried(tmp_path, tiny_mnist,
                                                                                        pg_url):
    """A sweep on host `other-host` dies (SIGKILL) with a trial RUNNING. The
    next sweep, on this host, cannot ask that host's processes; the trial's
    stopped heartbeat says it is dead: failed, its params asked again, the
    study filled and confirmed."""
    beat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=3"]
    # Both sweeps run one config (the study refuses another); 20 epochs keep a trial running a while.
    common = ("epochs=20", "hydra.sweeper.n_trials=2", *beat)
    script = "hostname other-host && exec " + shlex.join(sweep_cmd(tmp_path, tiny_mnist, pg_url, "a", *common))
    proc = subprocess.Popen(["unshare", "--uts", "sh", "-c", script], cwd=tmp_path, env=env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before it was killed"
            try:
                running = study_of(pg_url).get_trials(states=(TrialState.RUNNING,))
            except Exception:  # not created yet
                running = []
            if running and running[0].user_attrs.get("sweep"):
                break
            time.sleep(0.2)
        time.sleep(1.5)  # a heartbeat or two
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    dead = study_of(pg_url).get_trials(states=(TrialState.RUNNING,))
    assert len(dead) == 1 and dead[0].user_attrs["sweep"]["host"] == "other-host"
    # Where the dead sweep had claimed its run in the shared run index, the retried trial (the same
    # params, so the same run) waits for that claim until it goes stale: CLAIM_STALE_SECONDS (10 min)
    # unrefreshed, the liveness test for another host's claims. Age it rather than wait 10 minutes.
    stale = time.time() - CLAIM_STALE_SECONDS - 1
    for claim in (tmp_path / ".run-index").glob("*.claim"):
        assert json.loads(claim.read_text())["host"] == "other-host"
        os.utime(claim, (stale, stale))
    time.sleep(4)  # past the grace period

    out = subprocess.run(sweep_cmd(tmp_path, tiny_mnist, pg_url, "b", *common), cwd=tmp_path, env=env(),
                         capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 trial left RUNNING by a dead sweep marked failed (not counted)" in out.stderr + out.stdout
    study = study_of(pg_url)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[dead[0].number].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead[0].number]
    assert len(retries) == 1 and retries[0].params == dead[0].params  # Optuna's RetryHeartbeatStaleTrialCallback
    assert sum(counts_toward_target(t) for t in trials.values()) == 2
    assert study.user_attrs["confirm"]["n_completed"] == 1


@pytest.mark.slow
def test_a_trial_whose_heartbeat_stopped_on_another_host_is_retried(tmp_path, tiny_mnist, pg_url):
    """The same recovery without root: a RUNNING trial owned by a sweep on
    `other-host` that beat once and then stopped (what a dead sweep leaves)."""
    from optuna.distributions import FloatDistribution

    from hydra_plugins.bn_study_sweeper.storage import ask, open_storage

    storage = open_storage(pg_url, heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(study_name="shared", storage=storage, direction="maximize")
    dead = ask(study, {"lr": FloatDistribution(1e-3, 1.0, log=True)})
    dead.set_user_attr("sweep", {"host": "other-host", "pid": 1, "start": "0"})
    storage.record_heartbeat(dead._trial_id)
    time.sleep(3)  # past the grace period

    out = subprocess.run(sweep_cmd(tmp_path, tiny_mnist, pg_url, "b", "epochs=1", "hydra.sweeper.n_trials=2",
                                   "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=2"),
                         cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 trial left RUNNING by a dead sweep marked failed (not counted)" in out.stderr + out.stdout
    trials = {t.number: t for t in study_of(pg_url).get_trials()}
    assert trials[dead.number].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].params == trials[dead.number].params
    assert retries[0].state == TrialState.COMPLETE
    assert sum(counts_toward_target(t) for t in trials.values()) == 2


CAN_UNSHARE = shutil.which("unshare") is not None and os.geteuid() == 0


@pytest.mark.slow
@pytest.mark.parametrize("where", [
    "this host",  # found dead by its process
    pytest.param("other-host", marks=pytest.mark.skipif(  # found dead by its stopped heartbeat
        not CAN_UNSHARE, reason="needs `unshare --uts` (root) to run a sweep under another hostname")),
])
def test_a_sweep_killed_beside_another_is_finished_by_the_survivor_without_a_human(tmp_path, tiny_mnist, pg_url,
                                                                                    where):
    """Two sweeps on one study. The survivor has run its trial and has
    nothing left to ask when the other sweep is killed with -9, its trial
    running. The survivor waits for that trial, fails it once its sweep is
    known dead (its process gone on this host; its heartbeat stopped for the
    grace period on another), asks its params again, confirms the study's
    best once and exits 0: nobody reruns anything.

    The survivor is frozen (SIGSTOP) from its trial's start until the other
    sweep's trial runs, and the other sweep is frozen as soon as its trial
    runs, so that each has its trial RUNNING in that order whatever the
    machine's load; the other sweep's heartbeat stops there, and the grace
    period is longer than what is left of the survivor's trial."""
    beat = ["hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=12"]
    # Both sweeps run one config (the study refuses another).
    common = ("epochs=10", "hydra.sweeper.n_trials=2", *beat)
    logs = {s: open(tmp_path / f"{s}.log", "w") for s in "ab"}
    procs: dict[str, subprocess.Popen] = {}

    def start(s: str, host: str, *extra: str) -> None:
        cmd = sweep_cmd(tmp_path, tiny_mnist, pg_url, s, *common, *extra)
        if host != "this host":
            cmd = ["unshare", "--uts", "sh", "-c", f"hostname {host} && exec {shlex.join(cmd)}"]  # one pid
        procs[s] = subprocess.Popen(cmd, cwd=tmp_path, env=env(), start_new_session=True, stdout=logs[s],
                                    stderr=subprocess.STDOUT)

    def wait_for(what: str, found):
        deadline = time.monotonic() + 120
        while True:
            try:
                trials = study_of(pg_url).get_trials()
            except Exception:  # not created yet
                trials = []
            if (got := found(trials)) is not None:
                return got
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs.values()), \
                f"waiting for {what}: " + (tmp_path / "b.log").read_text()[-2000:]
            time.sleep(0.2)

    def running_of(s: str):
        return lambda trials: next((t for t in trials if t.state == TrialState.RUNNING
                                    and (t.user_attrs.get("sweep") or {}).get("pid") == procs[s].pid), None)

    try:
        start("b", "this host")  # the survivor asks the first trial
        mine = wait_for("the survivor's trial", running_of("b"))
        # Frozen until the other sweep has asked the second trial, however slowly it starts (a trial of b's
        # takes a second; on a loaded machine b finished both before the other sweep asked one). The other
        # sweep's grace period is long, so that it does not take the frozen survivor's trial for a dead one.
        os.killpg(procs["b"].pid, signal.SIGSTOP)
        start("a", where, "hydra.sweeper.grace_period=600")  # started then, the other sweep asks the second one
        dead = wait_for("the other sweep's trial", running_of("a"))
        os.killpg(procs["a"].pid, signal.SIGSTOP)
        os.killpg(procs["b"].pid, signal.SIGCONT)
        wait_for("the survivor's trial to end", lambda trials: trials[mine.number].state.is_finished() or None)
        assert study_of(pg_url).get_trials()[dead.number].state == TrialState.RUNNING
        time.sleep(1.5)  # the survivor sees nothing left to ask
        assert procs["b"].poll() is None, "the survivor ended with another sweep's trial running"
        os.killpg(procs["a"].pid, signal.SIGKILL)
        procs["a"].wait()
        assert procs["b"].wait(timeout=240) == 0, (tmp_path / "b.log").read_text()[-3000:]
    finally:
        for p in procs.values():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        for f in logs.values():
            f.close()
    study = study_of(pg_url)
    trials = {t.number: t for t in study.get_trials()}
    assert not [t for t in trials.values() if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert trials[dead.number].state == TrialState.FAIL and trials[dead.number].user_attrs["status"] == "stale"
    retries = [t for t in trials.values()
               if dead.number in (t.system_attrs.get("failed_trial"), t.user_attrs.get("retry_of"))]
    assert len(retries) == 1 and retries[0].params == dead.params and retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs["sweep"]["pid"] == procs["b"].pid  # the survivor asked it
    if where != "this host":
        assert "failed_trial" in retries[0].system_attrs  # Optuna's RetryHeartbeatStaleTrialCallback
    assert sum(counts_toward_target(t) for t in trials.values()) == 2
    best = max((t for t in trials.values() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert study.user_attrs["confirm"]["trial"] == best.number and study.user_attrs["confirm"]["n_completed"] == 1
    assert [k for k in study.user_attrs if k.startswith("confirm_claim:")] == [f"confirm_claim:{best.number}:1"]
    out = (tmp_path / "b.log").read_text()
    assert "waiting for 1 trial of another sweep" in out
    assert "1 trial of a dead sweep marked failed (asked again)" in out
