"""Campaigns when things go wrong, with real faults: a closed database port, a driver SIGKILLed
right after `campaign.json` appeared, a second driver, a changed model, trials that all fail, a
password in the tracking URI, two campaigns and an ensemble build on one fresh SQLite file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from softprompt.store import Store

from tiny_campaigns import check_runs, tiny_campaign

BIN = Path(sys.executable).parent / "softprompt"
PASSWORD = "Pa55-w0rd-never-written"


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, timeout=timeout,
                          env=os.environ | (env or {}))


def write_campaign(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(settings))
    return path


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]       # nothing listens once the probe closes


def test_an_unreachable_store_is_refused_in_seconds_and_nothing_is_written(tmp_path, jax_cache):
    uri = f"postgresql+psycopg://softprompt:{PASSWORD}@127.0.0.1:{closed_port()}/mlflow"
    path = write_campaign(tmp_path / "c.yaml", tiny_campaign("no-store", tmp_path / "runs", jax_cache,
                                                             tracking_uri=uri))
    started = time.monotonic()
    done = run_cli("search", "launch", str(path), timeout=120)
    assert done.returncode == 2 and time.monotonic() - started < 30
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: tracking_uri: cannot reach the tracking store postgresql+psycopg://softprompt:***@")
    assert PASSWORD not in done.stderr + done.stdout
    assert not (tmp_path / "runs").exists()


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, "the driver ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="module")
def resumed(ray_address, jax_cache, tmp_path_factory):
    """A campaign whose driver was SIGKILLed the moment `campaign.json` appeared, then resumed."""
    folder = tmp_path_factory.mktemp("killed-early")
    settings = tiny_campaign("early", folder / "runs", jax_cache, trials=2, scheduler="none",
                             ensemble={"top": 2, "select": "top"},
                             baselines=[{"template": "{premise} Question: {hypothesis}?", "shots": 2}])
    path = write_campaign(folder / "early.yaml", settings)
    driver = subprocess.Popen([str(BIN), "search", "launch", str(path)], env=os.environ | {"RAY_ADDRESS": ray_address},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    campaign = folder / "runs" / "early"
    _kill_when(driver, lambda: (campaign / "campaign.json").exists())
    tune_state_at_kill = any(campaign.glob("experiment_state-*.json"))
    done = run_cli("search", "resume", "early", "--store", str(folder / "runs"),
                   env={"RAY_ADDRESS": ray_address})
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, campaign, json.loads(done.stdout.strip().splitlines()[-1]), tune_state_at_kill


def test_a_driver_killed_right_after_campaign_json_is_resumed(resumed):
    folder, campaign, summary, tune_state_at_kill = resumed
    assert not tune_state_at_kill, "the kill came after Tune's first state; the early window was missed"
    assert summary["states"] == {"TERMINATED": 2} and summary["ensembles"][0]["name"] == "rte-ensemble"
    store = Store(f"sqlite:///{folder / 'runs' / 'mlflow.db'}")
    runs = store.trial_runs("early")
    assert len(runs) == 2 and {run.status for run in runs} == {"FINISHED"}
    assert summary["best_designed"]["name"].startswith("2-shot")
    assert json.loads((campaign / "campaign.json").read_text())["finished"] is True


def test_resuming_a_finished_campaign_changes_nothing(resumed, ray_address):
    folder, campaign, _, _ = resumed
    store = Store(f"sqlite:///{folder / 'runs' / 'mlflow.db'}")
    versions = len(store.client.search_model_versions("name='rte-ensemble'"))
    before = {path: path.stat().st_mtime_ns for path in campaign.rglob("*") if path.is_file()}
    done = run_cli("search", "resume", "early", "--store", str(folder / "runs"),
                   env={"RAY_ADDRESS": ray_address})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["ensembles"][0]["version"] == "1"
    assert len(store.client.search_model_versions("name='rte-ensemble'")) == versions == 1
    after = {path: path.stat().st_mtime_ns for path in campaign.rglob("*") if path.is_file()}
    assert after == before


def test_a_second_driver_is_refused_naming_the_holder(resumed):
    folder, campaign, _, _ = resumed
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from pathlib import Path\n"
                               "from softprompt.search.state import driver_lock\n"
                               "with driver_lock(Path(sys.argv[1])):\n    print('held', flush=True)\n"
                               "    time.sleep(300)\n", str(campaign)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        state = json.loads((campaign / "campaign.json").read_text())
        (campaign / "campaign.json").write_text(json.dumps(state | {"finished": False}))
        done = run_cli("search", "resume", "early", "--store", str(folder / "runs"))
        assert done.returncode == 2 and f"is being run by pid {holder.pid}" in done.stderr
    finally:
        holder.kill()
        holder.wait()
        (campaign / "campaign.json").write_text(json.dumps(state))


def test_resume_refuses_a_model_with_another_fingerprint(resumed, ray_address):
    folder, campaign, _, _ = resumed
    state = json.loads((campaign / "campaign.json").read_text())
    (campaign / "campaign.json").write_text(json.dumps(state | {"finished": False, "model_fingerprint": "0" * 64}))
    try:
        done = run_cli("search", "resume", "early", "--store", str(folder / "runs"),
                       env={"RAY_ADDRESS": ray_address})
        assert done.returncode == 2 and "fingerprint" in done.stderr and "000000000000" in done.stderr
    finally:
        (campaign / "campaign.json").write_text(json.dumps(state))


def test_a_campaign_whose_trials_all_fail_exits_non_zero(ray_address, jax_cache, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rows = [json.dumps({"text": f"sentence {i}", "label": "yes" if i % 2 else "no"}) for i in range(20)]
    (data / "train.jsonl").write_text("\n".join(rows[:5] + ["{not json"] + rows[5:]) + "\n")   # broken at line 6
    (data / "validation.jsonl").write_text("\n".join(rows) + "\n")
    task = tmp_path / "broken.yaml"
    task.write_text(yaml.safe_dump({"name": "broken", "data": {"train": "data/train.jsonl",
                                                                "validation": "data/validation.jsonl"},
                                    "input_template": "{text}", "label_field": "label", "label_words": ["no", "yes"]}))
    settings = tiny_campaign("all-fail", tmp_path / "runs", jax_cache, trials=2, scheduler="none", max_failures=0)
    path = write_campaign(tmp_path / "c.yaml", settings | {"tasks": [str(task)]})
    done = run_cli("search", "launch", str(path), env={"RAY_ADDRESS": ray_address})
    assert done.returncode == 1, done.stderr[-3000:]
    assert "every trial of campaign 'all-fail' failed" in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1])["states"] == {"ERROR": 2}


def _database_text(uri: str) -> str:
    """Every row of every table of the PostgreSQL store, as text (params, tags, model versions, ...)."""
    import psycopg

    plain = uri.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as connection:
        tables = [row[0] for row in connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        return "\n".join(str(row[0]) for table in tables
                         for row in connection.execute(f'SELECT t::text FROM "{table}" t'))


@pytest.mark.parametrize("source", ["environment", "campaign file"])
def test_no_password_is_written_or_printed(ray_address, jax_cache, tmp_path, postgres_uri, source, monkeypatch):
    """The password of the store, from $MLFLOW_TRACKING_URI or the campaign file's `tracking_uri`
    (then also from `--tracking-uri` options), is in no file, no row of the store, no output; and
    a campaign tracked on PostgreSQL records every trial as on SQLite."""
    uri = postgres_uri.replace("postgres@", f"postgres:{PASSWORD}@")      # trust auth: any password works
    settings = tiny_campaign("secret", tmp_path / "runs", jax_cache, trials=2, scheduler="none",
                             ensemble={"top": 2, "select": "top"})
    from_file = source == "campaign file"
    if from_file:
        settings["tracking_uri"] = uri
    path = write_campaign(tmp_path / "c.yaml", settings)
    done = run_cli("search", "launch", str(path),
                   env={"RAY_ADDRESS": ray_address, "MLFLOW_TRACKING_URI": "" if from_file else uri})
    assert done.returncode == 0, done.stderr[-3000:]
    check_runs(Store(uri), "secret", trials=2, tmp_path=tmp_path / "downloads")
    assert not (tmp_path / "runs" / "mlflow.db").exists()     # tracked on PostgreSQL only
    printed = done.stdout + done.stderr
    for noise in ("Configuration for experiment", "View detailed results", "TensorBoard", "INFO mlflow"):
        assert noise not in printed   # only softprompt's own lines unless --verbose
    if from_file:   # command-line options: an ensemble build and a report, in this process
        from typer.testing import CliRunner

        from softprompt.cli import app

        monkeypatch.chdir(tmp_path)          # anything written under ./runs is searched below too
        runner = CliRunner()
        for command in (["ensemble", "build", "--task", "rte", "--experiment", "secret", "--top", "2",
                         "--select", "top", "--name", "secret-option"],
                        ["search", "report", "secret", "--by", "seed", "--out", str(tmp_path / "runs" / "report")]):
            result = runner.invoke(app, command + ["--store", uri])
            assert result.exit_code == 0, result.output
            printed += result.output
    assert PASSWORD not in printed
    written = [p for p in (tmp_path / "runs").rglob("*") if p.is_file()]
    assert any(p.name == "tuner.pkl" for p in written) and any(p.name == "campaign.json" for p in written)
    leaked = [str(p) for p in written if PASSWORD.encode() in p.read_bytes()]
    assert not leaked
    assert "postgres:***@" in (tmp_path / "runs" / "secret" / "campaign.json").read_text()
    assert PASSWORD not in _database_text(uri)            # params, tags, registered models, artifact paths
    if from_file:
        return
    # (once: campaign.json holds the same masked URI either way) resume without the password is
    # refused with a clear message; status with it works
    refused = run_cli("search", "resume", "secret", "--store", str(tmp_path / "runs"),
                      env={"RAY_ADDRESS": ray_address, "MLFLOW_TRACKING_URI": ""})
    assert refused.returncode == 2 and "needs its password" in refused.stderr and PASSWORD not in refused.stderr
    status = run_cli("search", "status", "secret", "--store", str(tmp_path / "runs"),
                     env={"MLFLOW_TRACKING_URI": uri})
    assert status.returncode == 0 and PASSWORD not in status.stdout + status.stderr


def test_two_campaigns_and_a_build_on_one_fresh_sqlite_store(ray_address, jax_cache, tmp_path):
    store_uri = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    env = {"RAY_ADDRESS": ray_address, "MLFLOW_TRACKING_URI": store_uri}
    drivers = []
    for name in ("first", "second"):
        settings = tiny_campaign(name, tmp_path / name, jax_cache, trials=2, scheduler="none")
        path = write_campaign(tmp_path / f"{name}.yaml", settings)
        drivers.append(subprocess.Popen([str(BIN), "search", "launch", str(path)], env=os.environ | env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    first_out, first_err = drivers[0].communicate(timeout=600)
    build = subprocess.Popen([str(BIN), "ensemble", "build", "--task", "rte", "--experiment", "first", "--top", "2",
                              "--select", "top", "--name", "first-ensemble"], env=os.environ | env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs.append((drivers[0].returncode, first_out, first_err))
    for process in (drivers[1], build):
        out, err = process.communicate(timeout=600)
        outputs.append((process.returncode, out, err))
    for code, out, err in outputs:
        assert code == 0, err[-3000:]
        assert "database is locked" not in err
    assert len(Store(store_uri).trial_runs("first")) == len(Store(store_uri).trial_runs("second")) == 2
