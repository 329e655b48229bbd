"""Every registered ensemble version is an MLflow model: `mlflow.pyfunc.load_model` and
`mlflow models serve` answer with the same votes as softprompt's own path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import mlflow.pyfunc
import pandas
import pytest

from softprompt.core.evaluation import encode_inputs
from softprompt.core.tasks import Example, get_task
from softprompt.ensemble.loaded import input_factory, load_ensemble
from softprompt.ensemble.predict import vote_inputs
from softprompt.ensemble.pyfunc import _load_pyfunc
from softprompt.store import EnsembleError, Store

from ports import quiet_port
from sample_ensembles import register_sample_ensemble

RECORDS = [{"sentence": "a gorgeous, witty film"}, {"sentence": "the worst script in years"},
           {"sentence": "moving"}, {"sentence": "flat, dull and far too long " * 30}]


@pytest.fixture(scope="module")
def registered(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("pyfunc")
    store = Store(f"sqlite:///{root / 'mlflow.db'}", artifact_root=(root / "artifacts").as_uri())
    experiment_id = store.prepare_experiment("pyfunc")
    version = register_sample_ensemble(store, tiny_model, name="sst2-pyfunc", task="sst2", seeds=(0, 1, 2),
                                       experiment_id=experiment_id, multiplicities=(2, 1, 1), vote_rule="soft")
    return store, version


def expected(store, model):
    loaded = load_ensemble(store, "sst2-pyfunc@production", model)
    spec = get_task("sst2")
    examples = [Example(spec.input_text(record), "", {}) for record in RECORDS]
    make = input_factory(model, loaded, task=spec)
    votes, _ = vote_inputs(model, loaded.table, [make(ids) for ids in encode_inputs(model, spec, examples)])
    return [{"label": v.label, "votes": v.votes, "shares": v.shares, "members": v.members} for v in votes]


def test_pyfunc_load_model_predicts_the_voted_labels(registered, tiny_model, monkeypatch):
    store, version = registered
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.tracking_uri)
    model = mlflow.pyfunc.load_model("models:/sst2-pyfunc@production")
    answers = model.predict(RECORDS)
    assert [{k: a[k] for k in ("label", "votes", "shares", "members")} for a in answers] == expected(store, tiny_model)
    assert [a["truncated"] for a in answers] == [False, False, False, True]
    assert sum(answers[0]["votes"].values()) == 4                    # multiplicities 2 + 1 + 1
    assert model.predict(pandas.DataFrame(RECORDS))[0]["label"] == answers[0]["label"]
    with pytest.raises(Exception, match="sentence"):
        model.predict([{"text": "no such field"}])


def test_a_model_with_another_fingerprint_is_refused(registered, tiny_model, tmp_path):
    store, version = registered
    copy = shutil.copytree(Path(version.source.removeprefix("file://")) / "data" / "ensemble", tmp_path / "ensemble")
    manifest = (copy / "manifest.json").read_text().replace(tiny_model.fingerprint, "0" * 64)
    (copy / "manifest.json").write_text(manifest)
    with pytest.raises(EnsembleError, match="built for model fingerprint 000000000000"):
        _load_pyfunc(str(copy))


def test_mlflow_models_serve_answers(registered, tiny_model, tmp_path):
    store, _ = registered
    port = quiet_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    env = os.environ | {"MLFLOW_TRACKING_URI": store.tracking_uri,      # an activated venv: its uvicorn on PATH
                         "PATH": f"{mlflow_bin.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen([str(mlflow_bin), "models", "serve", "-m", "models:/sst2-pyfunc@production",
                               "--env-manager", "local", "--host", "127.0.0.1", "-p", str(port), "-w", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(1)
        response = httpx.post(f"http://127.0.0.1:{port}/invocations", json={"dataframe_records": RECORDS}, timeout=120)
        assert response.status_code == 200, response.text
        answers = response.json()["predictions"]
        assert [{k: a[k] for k in ("label", "votes", "shares", "members")} for a in answers] == expected(
            store, tiny_model)
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
