"""`optuna-dashboard <storage-url>` on 127.0.0.1 finds the tuning studies and
each trial's run record through its HTTP API."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution

DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")
NAMES = [f"tune-lr__batch_size=64,model.norm={n}" for n in ("none", "batch")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return json.loads(r.read())


@pytest.mark.slow
def test_dashboard_lists_the_studies_and_trial_records(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db?timeout=60"
    for name in NAMES:  # what hydra/sweeper=bn_optuna stores per cell
        study = optuna.create_study(study_name=name, storage=url, direction="maximize")
        study.add_trial(optuna.trial.create_trial(
            params={"lr": 0.05}, distributions={"lr": FloatDistribution(1e-3, 1.0, log=True)}, value=0.97,
            user_attrs={"record_path": str(tmp_path / "0_lr=0.05" / "result.json"), "status": "completed"}))

    port = free_port()
    proc = subprocess.Popen([str(DASHBOARD), url, "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                summaries = get_json(f"{base}/api/studies")["study_summaries"]
                break
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stderr.read()
                assert time.monotonic() < deadline, "optuna-dashboard did not answer within 30 s"
                time.sleep(0.3)
        assert sorted(s["study_name"] for s in summaries) == sorted(NAMES)
        detail = get_json(f"{base}/api/studies/{summaries[0]['study_id']}")
        (trial,) = detail["trials"]
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert attrs["record_path"].endswith("result.json") and attrs["status"] == "completed"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
