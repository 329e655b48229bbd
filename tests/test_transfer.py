"""Transfer initialisation (SPoT-style): `--init-from NAME@ALIAS[#K]` and `fixed.init_from` start a
run from a registered ensemble's prompt (its best member, or member K) on the same model only, and
`ensemble similar` ranks the registered prompts for a task."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from softprompt.cli import app
from softprompt.core.prompts import SoftPrompt
from softprompt.core.tasks import get_task
from softprompt.ensemble.similar import rank_similar
from softprompt.search.campaign import CampaignError, parse_campaign
from softprompt.search.launch import _resolve_init_prompt
from softprompt.store import EnsembleError, Store, fetch_init_prompt

from sample_ensembles import register_sample_ensemble

runner = CliRunner()


@pytest.fixture(scope="module")
def registry(tmp_path_factory, tiny_model):
    """rte-ensemble: three random prompts, the best (metric 70) is member #1 (seed 1);
    sst2-labels: one prompt that IS sst2's class-label init; elsewhere: a prompt of another model."""
    root = tmp_path_factory.mktemp("transfer")
    store = Store(f"sqlite:///{root / 'mlflow.db'}", artifact_root=(root / "artifacts").as_uri())
    experiment_id = store.prepare_experiment("transfer")
    register_sample_ensemble(store, tiny_model, name="rte-ensemble", task="rte", seeds=(0, 1, 2),
                             experiment_id=experiment_id, metrics=(50.0, 70.0, 60.0))
    register_sample_ensemble(store, tiny_model, name="sst2-labels", task="sst2", seeds=(0,), length=2,
                             init="class_labels", experiment_id=experiment_id)
    other = dataclasses.replace(tiny_model, fingerprint="0" * 64)
    register_sample_ensemble(store, other, name="elsewhere", task="rte", seeds=(0,), experiment_id=experiment_id)
    return store


def _seed_prompt(model, seed, length=4):
    return SoftPrompt.init(model, length=length, init="random_uniform", seed=seed).embeddings


def test_a_reference_names_the_best_member_or_member_k(registry, tiny_model, tmp_path):
    folder, source = fetch_init_prompt(registry, "rte-ensemble@production", tmp_path / "best")
    assert source == "rte-ensemble/1#1" and folder == tmp_path / "best"
    np.testing.assert_array_equal(SoftPrompt.load(folder, model=tiny_model).embeddings, _seed_prompt(tiny_model, 1))
    folder, source = fetch_init_prompt(registry, "rte-ensemble:1#2", tmp_path / "best")   # replaces the folder
    assert source == "rte-ensemble/1#2"
    np.testing.assert_array_equal(SoftPrompt.load(folder).embeddings, _seed_prompt(tiny_model, 2))
    with pytest.raises(EnsembleError, match="has members #0 to #2"):
        fetch_init_prompt(registry, "rte-ensemble@production#3", tmp_path / "x")
    with pytest.raises(EnsembleError, match="'#first' is not a member number"):
        fetch_init_prompt(registry, "rte-ensemble#first", tmp_path / "x")
    with pytest.raises(EnsembleError, match="no registered ensemble version"):
        fetch_init_prompt(registry, "nope@production", tmp_path / "x")


def test_train_starts_from_a_registered_prompt_of_the_same_model_only(registry, tiny_model, tmp_path):
    out = tmp_path / "prompt"
    args = ["train", "--task", "rte", "--model", "t5-tiny-random", "--dtype", "float32", "--steps", "1",
            "--eval-every", "1", "--batch-size", "2", "--max-examples", "4", "--prompt-length", "4",
            "--learning-rate", "1e-6", "--no-progress", "--store", registry.tracking_uri, "--out", str(out)]
    result = runner.invoke(app, args + ["--init-from", "rte-ensemble@production#2"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["init_from"] == "rte-ensemble/1#2"
    trained = SoftPrompt.load(out, model=tiny_model)
    assert trained.initializer == "from_file" and trained.hyperparameters["init_path"] == str(tmp_path / "prompt.init")
    np.testing.assert_allclose(trained.embeddings, _seed_prompt(tiny_model, 2), atol=1e-4)   # one tiny step away

    refused = runner.invoke(app, args + ["--init-from", "elsewhere@production"])
    assert refused.exit_code == 2 and "fingerprint" in refused.output
    clash = runner.invoke(app, args + ["--init-from", "rte-ensemble", "--init", "class_labels"])
    assert clash.exit_code == 2 and "--init-from sets the init" in clash.output


def test_similar_ranks_same_model_prompts_by_cosine_to_the_task_labels(registry, tiny_model):
    ranked, skipped = rank_similar(registry, tiny_model, "sst2")
    assert [n.reference for n in ranked] == ["sst2-labels@production", "rte-ensemble@production"]
    assert ranked[0].cosine == pytest.approx(1.0, abs=1e-5) and ranked[1].cosine < 0.9
    assert ranked[1].member == 1 and skipped == ["elsewhere@production"]

    result = runner.invoke(app, ["ensemble", "similar", "--task", "sst2", "--model", "t5-tiny-random",
                                 "--store", registry.tracking_uri])
    assert result.exit_code == 0, result.output
    line = json.loads(result.output.strip().splitlines()[-1])
    assert [n["reference"] for n in line["ranked"]] == ["sst2-labels@production", "rte-ensemble@production"]
    assert line["skipped"] == ["elsewhere@production"]
    assert runner.invoke(app, ["ensemble", "similar", "--task", "record", "--model", "t5-tiny-random",
                               "--store", registry.tracking_uri]).exit_code == 2   # free text: no label words


BASE = {"name": "t", "tasks": ["rte"], "model": "t5-tiny-random", "space": "none"}


def test_a_campaign_starts_every_trial_from_the_resolved_prompt(registry, tiny_model, tmp_path):
    campaign = parse_campaign(BASE | {"fixed": {"init_from": "rte-ensemble@production", "prompt_length": 4}})
    resolved = _resolve_init_prompt(campaign, registry, tmp_path, tiny_model)
    assert "init_from" not in resolved.fixed and resolved.fixed["init"] == "from_file"
    assert resolved.fixed["init_path"] == str(tmp_path / "init_prompt")
    np.testing.assert_array_equal(SoftPrompt.load(tmp_path / "init_prompt").embeddings, _seed_prompt(tiny_model, 1))
    assert parse_campaign(resolved.to_dict()).fixed == resolved.fixed     # campaign.json reads back as it is

    for value, message in (("elsewhere@production", "fingerprint"), ("rte-ensemble#1", "trials ask for up to 8")):
        longer = {"prompt_length": 8} if "#" in value else {"prompt_length": 4}
        with pytest.raises(CampaignError, match=message) as caught:
            _resolve_init_prompt(parse_campaign(BASE | {"fixed": {"init_from": value} | longer}), registry,
                                 tmp_path, tiny_model)
        assert caught.value.field == "fixed.init_from"


@pytest.mark.parametrize("changes, field", [
    ({"fixed": {"init_from": "rte-ensemble", "init": "sampled_vocab"}}, "fixed.init"),
    ({"fixed": {"init_from": "rte-ensemble", "init_path": "/x"}}, "fixed.init_path"),
    ({"fixed": {"init_from": "rte-ensemble"}, "overrides": {"init": ["sampled_vocab"]}}, "overrides.init"),
    ({"fixed": {"init_from": "rte@prod@x"}}, "fixed.init_from"),
    ({"overrides": {"reparam": ["none", "residual"]}, "scheduler": "pbt",
      "space": "table6"}, "overrides.reparam"),
    ({"fixed": {"reparam": "mlp"}}, "fixed.reparam"),
])
def test_campaign_settings_that_cannot_run_are_refused_naming_the_field(changes, field):
    with pytest.raises(CampaignError) as caught:
        parse_campaign(BASE | changes)
    assert caught.value.field == field, caught.value
    assert parse_campaign(BASE | {"overrides": {"reparam": {"grid": ["none", "residual"]}}}).axes()["reparam"]
    assert get_task("rte").label_words
