"""An ensemble scores labels the way its members were trained: the manifest records the target
format (plain, or T5's sentinel, paper §2.2) and every consumer — evaluation and serving — honours it."""

from __future__ import annotations

import dataclasses

import pytest

from softprompt.core.evaluation import evaluate_prompt
from softprompt.core.prompts import SoftPrompt
from softprompt.core.sentinel import with_sentinel_targets
from softprompt.core.tasks import get_task
from softprompt.ensemble.loaded import load_ensemble
from softprompt.ensemble.report import ensemble_table
from softprompt.serve.state import build_state
from softprompt.store import EnsembleError, EnsembleManifest, Member, Store
from softprompt.store.prompts import prompt_member


@pytest.fixture
def client(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}", artifact_root=(tmp_path / "artifacts").as_uri())
    store.prepare_experiment("formats")
    return store


def _register(client, model, tmp_path, *, name: str, task: str, trained: str, declared: str) -> str:
    """Three untrained prompts recorded as trained with `trained` targets, registered as an
    ensemble whose manifest says `declared`; returns the reference."""
    spec = get_task(task)
    experiment_id = client.experiment_id("formats")
    members, folders = [], []
    for seed in range(3):
        prompt = SoftPrompt.init(model, length=4, init="random_uniform", seed=seed, task=spec.name,
                                 label_words=spec.label_words)
        path = dataclasses.replace(prompt, hyperparameters={"target_format": trained}).save(tmp_path / f"{name}{seed}")
        run = client.client.create_run(experiment_id)
        client.log_prompt(run.info.run_id, path)
        client.end_run(run.info.run_id, "FINISHED")
        members.append(prompt_member(run.info.run_id, run.info.artifact_uri, path, metric=0.0))
        folders.append(path)
    manifest = EnsembleManifest(name=name, task=spec.name, model=model.name, model_fingerprint=model.fingerprint,
                                metric="accuracy", members=tuple(members), target_format=declared)
    client.register_ensemble(manifest, folders, experiment_id=experiment_id, alias="production")
    return f"{name}@production"


def test_a_manifest_without_target_format_or_with_an_unknown_one_is_refused(tiny_model):
    member = Member("run", "file:///x/prompt", "0" * 64, 1.0)
    manifest = EnsembleManifest(name="e", task="rte", model="m", model_fingerprint="f", metric="accuracy",
                                members=(member,))
    assert EnsembleManifest.from_json(manifest.to_json()) == manifest
    partial = manifest.to_json()
    del partial["target_format"]
    with pytest.raises(EnsembleError, match="malformed ensemble manifest .*target_format"):
        EnsembleManifest.from_json(partial)
    with pytest.raises(EnsembleError, match="unknown target format 'span'"):
        EnsembleManifest.from_json(manifest.to_json() | {"target_format": "span"})


def test_a_sentinel_ensemble_scores_each_member_with_sentinel_targets(client, tiny_model, tmp_path):
    reference = _register(client, tiny_model, tmp_path, name="sst2-sentinel", task="sst2", trained="sentinel",
                          declared="sentinel")
    loaded = load_ensemble(client, reference, tiny_model)
    task = get_task("sst2")
    examples = task.examples("validation", limit=32)
    table = ensemble_table(client, client.resolve_ensemble(reference), tiny_model, task, examples)
    sentinel_model = with_sentinel_targets(tiny_model)
    expected = [evaluate_prompt(sentinel_model, prompt.embeddings, task, examples)["accuracy"]
                for prompt in loaded.prompts]
    plain = [evaluate_prompt(tiny_model, prompt.embeddings, task, examples)["accuracy"] for prompt in loaded.prompts]
    assert expected != pytest.approx(plain), "these prompts must score differently under the two formats"
    assert [value for _, value in table.members] == pytest.approx(expected)

    [served] = build_state(tiny_model, [("sst2-sentinel@production", loaded)]).ensembles
    sentinel = tiny_model.tokenizer.sentinel_id(0)
    assert all(target[0] == sentinel for target in served.make_input([]).targets)


def test_a_member_trained_with_another_format_is_refused_before_the_alias_moves(client, tiny_model, tmp_path):
    with pytest.raises(EnsembleError, match="member 0 .* with 'plain' targets, not .* 'sentinel'"):
        _register(client, tiny_model, tmp_path, name="rte-mixed", task="rte", trained="plain", declared="sentinel")
    assert not client.client.get_registered_model("rte-mixed").aliases      # the alias points at nothing broken


def test_serving_refuses_a_free_text_sentinel_ensemble(client, tiny_model, tmp_path):
    loaded = load_ensemble(client, _register(client, tiny_model, tmp_path, name="squad-sentinel", task="squad",
                                             trained="sentinel", declared="sentinel"), tiny_model)
    with pytest.raises(EnsembleError, match="free text is decoded with plain targets"):
        build_state(tiny_model, [("squad-sentinel@production", loaded)])
