"""Guarded promotion (ensemble/promote.py) on t5-tiny-random ensembles registered without the
search layer: an unset alias is taken, a version no better than the alias's is refused (registered,
alias not moved), a better one is promoted only when the paired test's p is under the threshold.

Untrained prompts on the tiny model answer every input alike, so the "better" and "worse"
versions are learned votes whose label bias fixes the answer: one always says `positive`, the
other always `negative` — on SST-2's first 32 validation sentences they disagree everywhere."""

from __future__ import annotations

import pytest

from softprompt.core.tasks import get_task
from softprompt.ensemble.build import SelectionSplit
from softprompt.ensemble.promote import promote_if_better
from softprompt.store import EnsembleError, Store

from sample_ensembles import register_sample_ensemble

SPLIT = SelectionSplit("validation", None, None)
EXAMPLES = 32
ALWAYS = {"negative": {"weights": [1.0, 1.0], "bias": [50.0, -50.0]},   # label order: negative, positive
          "positive": {"weights": [1.0, 1.0], "bias": [-50.0, 50.0]}}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("promote")
    handle = Store(f"sqlite:///{root / 'mlflow.db'}", artifact_root=(root / "artifacts").as_uri())
    return handle, handle.prepare_experiment("promote-tests")


def _register(store, model, name: str, *, seeds=(0, 1), always: str | None = None):
    handle, experiment = store
    return register_sample_ensemble(handle, model, name=name, task="sst2", seeds=seeds, experiment_id=experiment,
                                    alias=None, vote_rule="learned" if always else "majority",
                                    pool=ALWAYS[always] if always else None)


def test_an_unset_alias_is_taken_and_an_equal_version_is_refused(store, tiny_model):
    handle, _ = store
    first = _register(store, tiny_model, "sst2-guarded")
    taken = promote_if_better(handle, first, max_p=0.05, split=SPLIT, limit=EXAMPLES, model=tiny_model)
    assert taken.promoted and taken.incumbent is None and handle.alias_version("sst2-guarded", "production") == first.version

    same = _register(store, tiny_model, "sst2-guarded")               # the same prompts: the same answers
    refused = promote_if_better(handle, same, max_p=0.05, split=SPLIT, limit=EXAMPLES, model=tiny_model)
    assert not refused.promoted and refused.incumbent == first.version and refused.examples == EXAMPLES
    assert (refused.candidate_only, refused.incumbent_only, refused.p_value) == (0, 0, 1.0)
    assert refused.score == refused.incumbent_score
    assert handle.alias_version("sst2-guarded", "production") == first.version       # not moved ...
    assert handle.resolve_ensemble(f"sst2-guarded/{same.version}").version == same.version   # ... yet registered
    assert refused.line().startswith("not promoted") and f"stays on version {first.version}" in refused.line()


def test_a_better_version_is_promoted_only_under_the_threshold(store, tiny_model):
    handle, _ = store
    gold = [e.targets for e in SPLIT.examples(get_task("sst2"), limit=EXAMPLES)]
    majority = max(("negative", "positive"), key=gold.count)
    minority = "positive" if majority == "negative" else "negative"
    worse = _register(store, tiny_model, "sst2-better", always=minority)
    promote_if_better(handle, worse, split=SPLIT, limit=EXAMPLES, model=tiny_model)          # takes the unset alias
    better = _register(store, tiny_model, "sst2-better", always=majority)

    strict = promote_if_better(handle, better, max_p=0.05, split=SPLIT, limit=EXAMPLES, model=tiny_model)
    right = gold.count(majority)
    assert (strict.candidate_only, strict.incumbent_only) == (right, EXAMPLES - right)   # every example discordant
    assert strict.score > strict.incumbent_score and strict.p_value > 0.05
    assert not strict.promoted and handle.alias_version("sst2-better", "production") == worse.version

    lenient = promote_if_better(handle, better, max_p=1.0, split=SPLIT, limit=EXAMPLES, model=tiny_model)
    assert lenient.promoted and handle.alias_version("sst2-better", "production") == better.version
    assert lenient.line().startswith("promoted") and f"p = {lenient.p_value:.3g}" in lenient.line()

    # the worse one cannot take the alias back, whatever the threshold
    back = promote_if_better(handle, worse, max_p=1.0, split=SPLIT, limit=EXAMPLES, model=tiny_model)
    assert not back.promoted and handle.alias_version("sst2-better", "production") == better.version


def test_a_version_without_a_selection_split_needs_one_named(store, tiny_model):
    handle, _ = store
    first = _register(store, tiny_model, "sst2-nosplit")
    promote_if_better(handle, first, model=tiny_model)
    second = _register(store, tiny_model, "sst2-nosplit", seeds=(2, 3))
    with pytest.raises(EnsembleError, match="records no selection split"):
        promote_if_better(handle, second, model=tiny_model)
    with pytest.raises(EnsembleError, match="p-value"):
        promote_if_better(handle, second, max_p=0, model=tiny_model)


def test_a_campaign_asking_a_guarded_top_n_rollout_names_a_split():
    from softprompt.search.campaign import CampaignError, parse_campaign

    spec = {"name": "c", "tasks": ["rte"], "model": "t5-tiny-random", "fixed": {"selection_examples": 8},
            "ensemble": {"select": "top", "promote_if_better": True}}
    with pytest.raises(CampaignError, match="^ensemble: promote_if_better .* name one in selection_split"):
        parse_campaign(spec)
    spec["ensemble"]["selection_split"] = "validation[:32]"
    assert parse_campaign(spec).ensemble.promote_if_better
