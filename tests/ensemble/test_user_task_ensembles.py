"""An ensemble of a user task (a YAML file, not a built-in name) loads, votes, evaluates and serves
wherever its task file is; where it is not, the error names the file."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import mlflow.pyfunc
import pytest

from softprompt.ensemble.loaded import load_ensemble, manifest_task
from softprompt.ensemble.report import evaluate_and_log
from softprompt.store import EnsembleError, EnsembleManifest, Store

from sample_ensembles import register_sample_ensemble

RTE_QA = str(Path(__file__).resolve().parents[2] / "examples" / "tasks" / "rte-qa.yaml")


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model) -> Store:
    root = tmp_path_factory.mktemp("user-task")
    store = Store(f"sqlite:///{root / 'mlflow.db'}", artifact_root=(root / "artifacts").as_uri())
    register_sample_ensemble(store, tiny_model, name="rte-qa-ensemble", task=RTE_QA, seeds=(0, 1, 2),
                             experiment_id=store.prepare_experiment("user-task"))
    return store


def test_a_user_task_ensemble_evaluates_and_predicts(store, tiny_model, monkeypatch):
    loaded = load_ensemble(store, "rte-qa-ensemble@production", tiny_model)
    assert loaded.manifest.task == "rte-qa" and loaded.manifest.task_source == RTE_QA
    table = evaluate_and_log(store, "rte-qa-ensemble@production", max_examples=8, designed=False)
    assert table.examples == 8 and len(table.members) == 3
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    answers = mlflow.pyfunc.load_model("models:/rte-qa-ensemble@production").predict(
        [{"premise": "A dog runs in the park.", "hypothesis": "An animal moves."}])
    assert answers[0]["label"] in ("Yes", "No") and sum(answers[0]["votes"].values()) == 3


def test_without_its_task_file_the_error_names_the_file(store, tiny_model):
    manifest = load_ensemble(store, "rte-qa-ensemble@production", tiny_model).manifest
    moved = dataclasses.replace(manifest, task_source="/nowhere/rte-qa.yaml")
    with pytest.raises(EnsembleError, match="/nowhere/rte-qa.yaml"):
        manifest_task(moved)
    partial = manifest.to_json()
    del partial["task_source"]                           # every field is written: one missing is malformed
    with pytest.raises(EnsembleError, match="malformed ensemble manifest .*task_source"):
        EnsembleManifest.from_json(partial)
