"""Voting rules on constructed votes, and the one-pass ensemble against N separate passes."""

from __future__ import annotations

import numpy as np
import pytest

from softprompt.core.evaluation import encode_inputs, predict
from softprompt.core.multi_prompt import stack_prompts
from softprompt.core.prompts import SoftPrompt
from softprompt.core.tasks import get_task
from softprompt.ensemble.predict import ensemble_predict, member_label_scores
from softprompt.ensemble.voting import majority_vote, vote_classification

LABELS = ("negative", "positive")


def test_majority_wins_regardless_of_likelihood():
    scores = np.array([[-0.1, -3.0], [-2.0, -1.9], [-2.0, -1.8]])  # member 0 very sure of negative
    vote = vote_classification(scores, LABELS)
    assert vote.label == "positive" and vote.votes == {"negative": 1, "positive": 2}
    assert vote.members == ["negative", "positive", "positive"]


def test_tie_goes_to_the_higher_summed_log_likelihood():
    scores = np.array([[-0.1, -3.0], [-1.0, -0.9]])  # 1-1; sums: negative -1.1, positive -3.9
    assert vote_classification(scores, LABELS).label == "negative"
    scores = np.array([[-0.5, -0.6], [-4.0, -0.1]])  # 1-1; sums: negative -4.5, positive -0.7
    assert vote_classification(scores, LABELS).label == "positive"


def test_mean_logprob_rule_can_disagree_with_the_majority():
    scores = np.array([[-0.01, -9.0], [-1.0, -0.9], [-1.0, -0.9]])
    assert vote_classification(scores, LABELS).label == "positive"
    assert vote_classification(scores, LABELS, rule="mean_logprob").label == "negative"
    with pytest.raises(ValueError, match="unknown vote rule"):
        vote_classification(scores, LABELS, rule="max")


def test_free_text_votes_compare_normalised_answers():
    vote = majority_vote(["The dog.", "a cat", "dog"], [-1.0, -0.1, -2.0])
    assert vote.label == "The dog." and vote.votes == {"The dog.": 2, "a cat": 1}
    assert majority_vote(["x", "y"], [-1.0, -1.0]).label == "x"  # full tie: earliest member


def test_one_pass_ensemble_equals_separate_single_prompt_passes(tiny_model):
    task = get_task("rte")
    examples = task.examples("validation", limit=6)
    encoded = encode_inputs(tiny_model, task, examples)
    prompts = [SoftPrompt.init(tiny_model, length=n, seed=s, init="sampled_vocab").embeddings
               for n, s in ((4, 0), (6, 1), (4, 2), (5, 3), (4, 4))]
    table = stack_prompts(prompts)
    together = member_label_scores(tiny_model, table, encoded, task.label_words)  # [B, N, C]
    for n, prompt in enumerate(prompts):
        alone = predict(tiny_model, stack_prompts([prompt]), task, encoded)
        assert [task.label_words[c] for c in together[:, n].argmax(-1)] == alone
    votes = ensemble_predict(tiny_model, table, task, encoded)
    assert [v.members for v in votes] == [[task.label_words[c] for c in row.argmax(-1)] for row in together]
    assert all(sum(v.votes.values()) == 5 for v in votes)
