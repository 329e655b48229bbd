"""Campaign files: the schema, the checks that name the offending field, Table 6 as a Tune space."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import yaml

from softprompt.core.tasks import get_task
from softprompt.search import space as space_lib
from softprompt.search.campaign import CampaignError, check_resources, load_campaign, parse_campaign

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "campaigns"
BASE = {"name": "t", "tasks": ["rte"], "model": "t5-tiny-random"}


def rejected(field: str, **changes) -> str:
    with pytest.raises(CampaignError) as caught:
        parse_campaign(BASE | changes)
    assert caught.value.field == field, caught.value
    assert str(caught.value).startswith(field + ":")
    return str(caught.value)


@pytest.mark.parametrize("name", ["tiny-rte.yaml", "sst2-gemma.yaml"])
def test_example_campaigns_are_valid(name):
    campaign = load_campaign(EXAMPLES / name)
    assert campaign.num_samples * campaign.seeds * len(campaign.tasks) in (4, 8)
    assert campaign.scheduler.type == "asha"


@pytest.mark.parametrize("path", sorted(EXAMPLES.rglob("*.yaml")), ids=lambda p: str(p.relative_to(EXAMPLES)))
def test_every_shipped_campaign_file_parses_from_the_repository_root(path, monkeypatch):
    monkeypatch.chdir(EXAMPLES.parents[1])            # task files are named from the repository root
    campaign = load_campaign(path)
    assert campaign.model in ("gemma3-270m", "t5-tiny-random")
    assert all(get_task(task).label_words for task in campaign.tasks)


def test_unknown_task_is_rejected_naming_the_field():
    assert "unknown task 'nope'" in rejected("tasks.1", tasks=["rte", "nope"])


def test_unknown_hyperparameter_is_rejected_naming_the_field():
    assert "unknown hyperparameter" in rejected("overrides.learnig_rate", overrides={"learnig_rate": [0.1]})
    assert "unknown hyperparameter" in rejected("fixed.momentum", fixed={"momentum": 0.9})
    rejected("optimizer", optimizer="adam")  # unknown top-level key


def test_empty_or_inverted_ranges_are_rejected():
    assert "inverted range" in rejected("overrides.learning_rate",
                                        overrides={"learning_rate": {"loguniform": [0.5, 0.001]}})
    assert "empty choice" in rejected("overrides.batch_size", overrides={"batch_size": {"choice": []}})
    rejected("overrides.batch_size", overrides={"batch_size": [0, 4]})
    rejected("overrides.steps_per_decay", fixed={"decay_factor": 0.5},
             overrides={"steps_per_decay": {"choice": [None]}})


def test_resources_the_cluster_lacks_are_rejected():
    campaign = parse_campaign(BASE | {"resources": {"cpu": 64}})
    with pytest.raises(CampaignError, match=r"^resources.cpu: a trial asks for 64 CPU but the cluster has 2"):
        check_resources(campaign, {"CPU": 2.0})
    check_resources(parse_campaign(BASE | {"resources": {"cpu": 2}}), {"CPU": 2.0})
    with pytest.raises(CampaignError, match="^resources.gpu"):
        check_resources(parse_campaign(BASE | {"resources": {"gpu": 0.5}}), {"CPU": 2.0})


def test_bad_yaml_files_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE | {"resources": {"cpu": -1}}))
    with pytest.raises(CampaignError, match="^resources.cpu"):
        load_campaign(path)


def test_table6_space_samples_stay_in_range():
    campaign = parse_campaign(BASE)
    space = campaign.param_space()
    rng = random.Random(0)
    table6 = space_lib.TABLE6
    for _ in range(200):
        sampled = {name: domain.sample(random_state=rng.randrange(2**31)) if hasattr(domain, "sample") else domain
                   for name, domain in space.items() if name not in ("task", "seed")}
        config = space_lib.train_config(sampled | {"task": "rte", "seed": 0})
        assert 0.001 <= config.learning_rate <= 0.5
        for name in ("parameter_scaling", "batch_size", "steps", "warmup_steps", "decay_factor"):
            assert getattr(config, name) in table6[name].values
        assert config.steps_per_decay in table6["steps_per_decay"].values
        assert (config.decay_factor is None) == (config.steps_per_decay is None)


def test_scale_shrinks_table6_but_not_overrides():
    campaign = parse_campaign(BASE | {"scale": {"steps": 0.001, "batch_size": 1 / 32},
                                      "overrides": {"prompt_length": [5, 20]}, "fixed": {"batch_size": 4}})
    axes = campaign.axes()
    assert axes["steps"].values == (10, 20, 30)
    assert axes["warmup_steps"].values == (0, 2, 3)
    assert axes["steps_per_decay"].values == (None, 4, 6, 8)
    assert axes["prompt_length"].values == (5, 20) and "batch_size" not in axes
    assert campaign.max_steps() == 30 and campaign.constants()["batch_size"] == 4


def test_seeds_and_tasks_are_grid_axes_with_shared_samples():
    campaign = parse_campaign(BASE | {"tasks": ["rte", "sst2"], "seeds": 3, "seed": 10})
    assert campaign.grid() == {"task": ["rte", "sst2"], "seed": [10, 11, 12]}


def test_fractional_gpus_turn_xla_preallocation_off():
    from softprompt.search.campaign import parse_campaign
    from softprompt.search.launch import accelerator_env

    shared = parse_campaign({"name": "g", "tasks": ["rte"], "resources": {"cpu": 1, "gpu": 0.25}})
    whole = parse_campaign({"name": "g", "tasks": ["rte"], "resources": {"cpu": 1, "gpu": 1}})
    assert accelerator_env(shared) == {"XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
    assert accelerator_env(whole) == {}


def test_several_gpus_per_trial_split_the_weights_over_them():
    """`gpu: N` (N >= 2) reaches the trials (unfused) or the step server (fused, the whole group);
    core/sharding.py then splits the weights over the N devices, unless `sharding:` says otherwise."""
    from softprompt.search.launch import accelerator_env

    unfused = parse_campaign(BASE | {"resources": {"gpu": 8}, "fuse": False})
    assert accelerator_env(unfused) == {"SOFTPROMPT_GPUS": "8"} and unfused.process_gpus() == 8
    fused = parse_campaign(BASE | {"resources": {"gpu": 8}, "sharding": {"model_axis": 4, "strategy": "tensor"}})
    assert fused.step_server_gpus() == 8 and fused.process_gpus() == 8
    assert accelerator_env(fused) == {"SOFTPROMPT_MODEL_AXIS": "4", "SOFTPROMPT_SHARDING": "tensor"}
    assert "3 does not divide the 8 GPUs" in rejected("sharding.model_axis", resources={"gpu": 8},
                                                       sharding={"model_axis": 3})
    assert "sharding.strategy" in rejected("sharding.strategy", sharding={"strategy": "zero"})


def test_checkpoints_on_the_selection_split_need_records_held_out():
    assert "selection_examples" in rejected("fixed.eval_split", fixed={"eval_split": "selection"})
    campaign = parse_campaign(BASE | {"fixed": {"eval_split": "selection", "selection_examples": 8}}, source="t")
    assert campaign.constants()["eval_split"] == "selection"


def test_greedy_ensembles_need_a_selection_split_held_out_or_named():
    assert "fixed.selection_examples" in rejected("ensemble.select", ensemble={"select": "greedy"})
    named = parse_campaign(BASE | {"ensemble": {"select": "greedy", "selection_split": "validation[500:]"},
                                   "fixed": {"eval_split": "validation[500:]"}}, source="t")
    assert named.ensemble.selection_split == "validation[500:]"
    assert "validation[5]" in rejected("ensemble.selection_split", ensemble={"selection_split": "validation[5]"})


def test_relative_task_files_and_data_folders_are_made_absolute(monkeypatch):
    """Trials run in folders of their own: a path relative to where `launch` ran must not break them."""
    monkeypatch.chdir(EXAMPLES.parents[1])
    campaign = parse_campaign(BASE | {"tasks": ["examples/tasks/rte-qa.yaml", "rte"], "data_dir": "core/assets/data"},
                              source="t")
    assert campaign.tasks == [str(EXAMPLES.parents[1] / "examples/tasks/rte-qa.yaml"), "rte"]
    assert campaign.data_dir == str(EXAMPLES.parents[1] / "core/assets/data")


def test_fuse_is_on_where_trials_ask_for_gpus_and_the_step_server_takes_them():
    assert not parse_campaign(BASE).fused()                                        # auto, CPU trials
    assert parse_campaign(BASE | {"fuse": True}).fused()
    assert not parse_campaign(BASE | {"resources": {"gpu": 0.25}, "fuse": False}).fused()
    on_gpu = parse_campaign(BASE | {"resources": {"gpu": 0.25}})
    assert on_gpu.fused() and on_gpu.step_server_gpus() == 1.0
    check_resources(on_gpu, {"CPU": 2.0, "GPU": 1.0})     # the trials take no GPU, the server one
    with pytest.raises(CampaignError, match="^fuse.gpu: the step server of fused trials asks for 2 GPU"):
        check_resources(parse_campaign(BASE | {"fuse": {"enabled": True, "gpu": 2}}), {"CPU": 2.0, "GPU": 1.0})
    assert "fuse.max_trials" in rejected("fuse.max_trials", fuse={"max_trials": 0})
    assert "fuse.enabled" in rejected("fuse.enabled", fuse="sometimes")


def test_the_median_rule_stops_a_trial_below_the_median_and_never_pauses_one_for_want_of_others():
    from ray.tune.experiment import Trial

    from softprompt.search.schedulers import MedianStopping, make_scheduler

    rule = make_scheduler(parse_campaign(BASE | {"scheduler": {"type": "median", "grace_period": 2, "min_samples": 2}}))
    assert isinstance(rule, MedianStopping)
    rule.set_search_properties("score", "max")
    trials = [Trial("run_trial", config={}, stub=True, trial_id=f"t{i}") for i in range(5)]
    decisions = [rule.on_trial_result(None, trials[0], {"training_iteration": 1, "score": 10.0})]   # in its grace
    for trial, score in zip(trials, (50.0, 60.0, 70.0, 40.0, 80.0)):
        decisions.append(rule.on_trial_result(None, trial, {"training_iteration": 2, "score": score}))
    # t0, t1: fewer than 2 others to compare with -> they run on (Tune's own rule would pause them
    # for pending trials); t3's best 40 trails the others' median -> stopped; t4 leads -> runs on
    assert decisions == ["CONTINUE", "CONTINUE", "CONTINUE", "CONTINUE", "STOP", "CONTINUE"]
    assert "scheduler.type" in rejected("scheduler.type", scheduler={"type": "hyperband"})


def test_a_campaign_built_on_another_equals_the_same_campaign_written_out(monkeypatch):
    monkeypatch.chdir(EXAMPLES.parents[1])
    based = load_campaign(EXAMPLES / "paper" / "fig3a-length100-300-steps.yaml")
    written_out = {
        "name": "paper-fig3a-length100-300-steps", "tasks": ["sst2"], "model": "gemma3-270m", "dtype": "bfloat16",
        "space": "none", "overrides": {"prompt_length": {"grid": [100]}},
        "fixed": {"batch_size": 8, "steps": 300, "init": "class_labels", "selection_examples": 500,
                  "selection_seed": 0},
        "num_samples": 1, "seeds": 3, "seed": 0, "scheduler": {"type": "none"}, "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent_trials": 2, "max_failures": 2, "eval_every": 150, "max_eval_examples": 200,
        "storage_path": "./runs"}
    assert based == parse_campaign(written_out)


def test_a_campaign_may_search_what_its_base_fixed_and_never_inherits_the_name(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(BASE | {"space": "none", "fixed": {"init": "class_labels",
                                                                                          "steps": 40}}))
    (tmp_path / "child.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "name": "child",
                                                          "overrides": {"init": {"grid": ["sampled_vocab"]}}}))
    child = load_campaign(tmp_path / "child.yaml")
    assert child.fixed == {"steps": 40}
    assert "init" in child.axes() and child.param_space()["init"] is not None
    (tmp_path / "nameless.yaml").write_text(yaml.safe_dump({"base": "base.yaml"}))
    with pytest.raises(CampaignError, match="^name: Field required"):
        load_campaign(tmp_path / "nameless.yaml")


def test_a_missing_or_circular_base_is_refused_naming_it(tmp_path):
    (tmp_path / "a.yaml").write_text(yaml.safe_dump({"base": "b.yaml", "name": "a"}))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(BASE | {"base": "a.yaml"}))
    with pytest.raises(CampaignError, match=r"b\.yaml: base: a\.yaml is built on this file itself"):
        load_campaign(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"base": "gone.yaml", "name": "c"}))
    with pytest.raises(CampaignError, match=r"c\.yaml: base: no campaign file .*gone\.yaml"):
        load_campaign(tmp_path / "c.yaml")


def test_a_misspelt_model_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(CampaignError, match=r"^model: unknown model 'gemma3-27Om': use one of .*gemma3-270m"):
        parse_campaign(BASE | {"model": "gemma3-27Om"})
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert parse_campaign(BASE | {"model": str(folder)}).model == str(folder)   # a folder is checked when loaded


def test_trials_compile_into_the_users_jax_cache_when_one_is_set(monkeypatch, tmp_path):
    """`jax_cache_dir: null`: $JAX_COMPILATION_CACHE_DIR when set (shared with whatever else the user
    runs), else <storage_path>/jax_cache; a campaign's own setting wins."""
    from softprompt.search.launch import _runtime

    campaign = parse_campaign(BASE | {"storage_path": str(tmp_path)})
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    assert _runtime(campaign, None).jax_cache_dir == str(tmp_path.resolve() / "jax_cache")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path / "mine"))
    assert _runtime(campaign, None).jax_cache_dir == str(tmp_path / "mine")
    own = parse_campaign(BASE | {"storage_path": str(tmp_path), "jax_cache_dir": str(tmp_path / "own")})
    assert _runtime(own, None).jax_cache_dir == str(tmp_path / "own")


def test_starting_ray_after_jax_prints_no_fork_warning():
    """JAX warns at every fork once its backend runs; Ray's processes are fork + exec, so the
    driver (which has loaded or sized a model by then) silences it when it starts Ray."""
    import os
    import subprocess
    import sys

    script = ("import subprocess, sys, jax; jax.devices()\n"
              "if sys.argv[1] == 'ray':\n"
              "    from softprompt.search.ray_env import apply_ray_env_defaults; apply_ray_env_defaults()\n"
              "subprocess.run(['true'], preexec_fn=lambda: None)\n")   # as Ray starts its processes
    printed = {case: subprocess.run([sys.executable, "-c", script, case], capture_output=True, text=True,
                                    env=os.environ | {"JAX_PLATFORMS": "cpu"}).stderr
               for case in ("plain", "ray")}
    assert "os.fork() was called" in printed["plain"]        # what the driver printed before
    assert "os.fork() was called" not in printed["ray"]
