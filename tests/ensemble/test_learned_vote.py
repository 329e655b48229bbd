"""The learned vote (`ensemble.stacking`): a pool of the members' label log-probabilities with
weights and a per-label bias fitted on labelled examples."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_softmax, softmax

from softprompt.core.tasks import get_task
from softprompt.ensemble.loaded import LoadedEnsemble, check_servable
from softprompt.ensemble.stacking import Pool, fit_pool, label_log_probabilities, pool_logits
from softprompt.ensemble.voting import combine, vote_classification
from softprompt.store import EnsembleError, EnsembleManifest, Member


def _members(rng: np.random.Generator, gold: np.ndarray, strengths, lean=0.0) -> np.ndarray:
    """[K, B, 2] label log-likelihoods: member k's margin for the gold label is strengths[k] plus
    noise; `lean` is added to label 1's score of every member (a shared bias)."""
    sign = np.where(gold == 1, 1.0, -1.0)
    margins = np.stack([strength * sign + rng.normal(size=gold.shape) for strength in strengths])
    return np.stack([np.zeros_like(margins), margins + lean], axis=-1)


def test_the_pool_is_its_formula_and_one_vote_per_example_agrees():
    scores = np.random.default_rng(0).normal(size=(4, 6, 3)) * 2                   # [K, B, C]
    weights, bias = [0.5, 0.0, 2.0, 1.0], [0.3, -0.2, 0.0]
    logits = sum(w * log_softmax(scores[k], axis=-1) for k, w in enumerate(weights)) + np.array(bias)
    winners, shares = combine(scores, weights=weights, rule="learned", bias=bias)
    assert (winners == logits.argmax(-1)).all()
    assert shares == pytest.approx(softmax(logits, axis=-1))
    assert label_log_probabilities(scores) == pytest.approx(log_softmax(scores, axis=-1))
    for b in range(6):
        vote = vote_classification(scores[:, b], ("a", "b", "c"), rule="learned", weights=weights, bias=bias)
        assert vote.label == "abc"[winners[b]] and list(vote.shares.values()) == pytest.approx(shares[b].tolist())
        assert sum(vote.votes.values()) == 4                                       # each member once


def test_fitting_gives_an_uninformative_member_no_weight_and_corrects_a_shared_lean():
    rng = np.random.default_rng(1)
    gold = rng.integers(0, 2, size=400)
    scores = _members(rng, gold, strengths=[1.5, 1.0, 0.0], lean=2.0)              # member 2: noise
    pool = fit_pool(scores, gold)
    assert pool.weights[2] < 0.1 * pool.weights[0]
    assert pool.bias[1] - pool.bias[0] < -1.0                                       # leans back
    fresh_gold = rng.integers(0, 2, size=2000)
    fresh = _members(rng, fresh_gold, strengths=[1.5, 1.0, 0.0], lean=2.0)
    learned = np.mean(pool_logits(fresh, pool).argmax(-1) == fresh_gold)
    for member in range(3):
        assert learned > np.mean(fresh[member].argmax(-1) == fresh_gold) + 0.02
    assert learned > np.mean(combine(fresh, rule="soft")[0] == fresh_gold) + 0.02


def test_members_without_signal_get_exactly_zero_weight():
    """Scores equal across labels move no logit: the optimiser stops near the bound (~1e-15 on some
    label balances); the pool says 0, so `learned_pool` can tell that nothing carries signal."""
    for positives in range(0, 49, 4):
        gold = np.array([1] * positives + [0] * (48 - positives))
        pool = fit_pool(np.zeros((2, 48, 2)), gold)
        assert (pool.weights == 0).all(), positives


def test_the_learned_vote_needs_its_bias_and_valid_weights():
    scores = np.zeros((2, 3, 2))
    with pytest.raises(ValueError, match="bias per label"):
        combine(scores, rule="learned")
    with pytest.raises(ValueError, match="non-negative member weights"):
        combine(scores, rule="learned", weights=[1.0, -1.0], bias=[0.0, 0.0])
    with pytest.raises(ValueError, match="one gold label per example"):
        fit_pool(scores, np.array([0, 1]))


def test_one_member_with_no_bias_votes_as_itself():
    scores = np.random.default_rng(2).normal(size=(1, 50, 2))
    winners, _ = combine(scores, weights=[0.7], rule="learned", bias=[0.0, 0.0])
    assert (winners == scores[0].argmax(-1)).all()
    assert Pool(np.array([0.7]), np.zeros(2)).describe() == {"weights": [0.7], "bias": [0.0, 0.0]}


def _manifest(**fields) -> EnsembleManifest:
    members = (Member("run-a", "file:///a/prompt", "0" * 64, 80.0, 2), Member("run-b", "file:///b/prompt", "1" * 64, 79.0))
    return EnsembleManifest(**({"name": "e", "task": "sst2", "model": "m", "model_fingerprint": "f",
                                "metric": "accuracy", "members": members} | fields))


def test_a_manifest_keeps_its_pool_and_refuses_a_malformed_one():
    learned = _manifest(vote_rule="learned", pool={"weights": [1.5, 0.0], "bias": [0.2, -0.2]})
    again = EnsembleManifest.loads(learned.dumps())
    assert again == learned and again.vote_weights == (1.5, 0.0) and again.vote_bias == (0.2, -0.2)
    plain = _manifest()
    assert plain.vote_weights == (2.0, 1.0) and plain.vote_bias is None and plain.pool is None
    for fields, problem in [({"vote_rule": "learned"}, "pool missing"),
                            ({"pool": {"weights": [1.0, 1.0], "bias": [0.0, 0.0]}}, "vote rule 'majority'"),
                            ({"vote_rule": "learned", "pool": {"weights": [1.0], "bias": [0.0, 0.0]}},
                             "1 weights for 2 members"),
                            ({"vote_rule": "learned", "pool": {"weights": [1.0, -0.1], "bias": [0.0, 0.0]}},
                             ">= 0"),
                            ({"vote_rule": "learned", "pool": {"weights": [0.0, 0.0], "bias": [0.0, 0.0]}},
                             "not all 0"),
                            ({"vote_rule": "learned", "pool": {"weights": [1.0, float("nan")], "bias": [0.0, 0.0]}},
                             "finite numbers"),
                            ({"vote_rule": "learned", "pool": {"weights": [1.0, 1.0]}}, "exactly 'weights' and 'bias'")]:
        with pytest.raises(EnsembleError, match=problem):
            _manifest(**fields)


def test_a_pool_for_another_number_of_labels_is_refused_before_serving():
    three = _manifest(vote_rule="learned", pool={"weights": [1.0, 1.0], "bias": [0.0, 0.0, 0.0]})
    loaded = LoadedEnsemble("e", "1", three, [], None)
    with pytest.raises(EnsembleError, match="bias for 3 labels, task 'sst2' has 2"):
        check_servable(loaded, get_task("sst2"))
    check_servable(loaded._replace(manifest=_manifest(vote_rule="learned", pool={"weights": [1.0, 1.0],
                                                                               "bias": [0.0, 0.0]})), get_task("sst2"))
