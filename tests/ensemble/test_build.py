"""A 5-member ensemble built from a real (tiny) campaign, registered, evaluated, and refused
when a member's artifact or model does not match."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from softprompt.cli import app
from softprompt.ensemble.build import build_ensemble
from softprompt.ensemble.manifest import EnsembleError
from softprompt.ensemble.registry import resolve

BIN = Path(sys.executable).parent / "softprompt"
runner = CliRunner()


@pytest.fixture(scope="module")
def campaign(tmp_path_factory):
    """A 5-trial campaign on RTE launched through the CLI with `ensemble: {top: 5}`."""
    folder = tmp_path_factory.mktemp("campaign")
    spec = {"name": "ens", "tasks": ["rte"], "model": "t5-tiny-random", "space": "table6",
            "fixed": {"learning_rate": 0.3, "parameter_scaling": False, "batch_size": 4, "steps": 6,
                      "warmup_steps": 0, "decay_factor": None, "prompt_length": 4, "init": "sampled_vocab"},
            "num_samples": 1, "seeds": 5, "scheduler": "none", "resources": {"cpu": 1},
            "max_concurrent_trials": 2, "eval_every": 3, "max_eval_examples": 8, "storage_path": str(folder),
            "ensemble": {"top": 5}}
    (folder / "ens.yaml").write_text(yaml.safe_dump(spec))
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"} | {
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run([str(BIN), "search", "launch", str(folder / "ens.yaml")], capture_output=True, text=True,
                          timeout=900, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    built = json.loads(done.stdout.strip().splitlines()[-1])
    return f"sqlite:///{folder / 'mlflow.db'}", built


def test_campaign_end_registers_a_five_member_ensemble(campaign):
    uri, built = campaign
    client = MlflowClient(uri)
    assert built["ensemble"] == "rte-ensemble" and len(built["members"]) == 5
    model = client.get_registered_model("rte-ensemble")
    assert {k: str(v) for k, v in model.aliases.items()} == {"production": built["version"]}
    manifest = resolve(client, "rte-ensemble@production").manifest
    assert manifest.target_format == "plain"  # the trials' own target format, recorded
    metrics = [m.metric for m in manifest.members]
    assert metrics == sorted(metrics, reverse=True) and len(set(m.run_id for m in manifest.members)) == 5


def test_ensemble_evaluate_prints_table3(campaign):
    uri, _ = campaign
    result = runner.invoke(app, ["ensemble", "evaluate", "rte-ensemble@production", "--max-examples", "16",
                                 "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    table = json.loads(result.output.strip().splitlines()[-1])
    values = [m["accuracy"] for m in table["members"]]
    assert len(values) == 5 and table["best"] == max(values)
    assert table["average"] == pytest.approx(sum(values) / 5)
    assert "ensemble (5, voted)" in result.output


def test_too_few_runs_and_allow_fewer(campaign):
    uri, _ = campaign
    client = MlflowClient(uri)
    with pytest.raises(EnsembleError, match="only 5 eligible"):
        build_ensemble(client, task="rte", top=6, experiments=["ens"])
    smaller = build_ensemble(client, task="rte", top=6, experiments=["ens"], name="rte-small", allow_fewer=True)
    assert len(smaller.manifest.members) == 5


def test_a_changed_member_artifact_is_refused(campaign, tmp_path):
    uri, _ = campaign
    client = MlflowClient(uri)
    registered = build_ensemble(client, task="rte", top=2, experiments=["ens"], name="rte-tampered", alias="prod")
    member = registered.manifest.members[1]
    path = Path(member.artifact_uri.removeprefix("file://")) / "prompt.safetensors"
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    result = runner.invoke(app, ["ensemble", "evaluate", "rte-tampered@prod", "--tracking-uri", uri])
    assert result.exit_code == 2 and "sha256 differs" in result.output and member.run_id in result.output
