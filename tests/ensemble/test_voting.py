"""Voting rules on constructed votes (weights, soft vote, shares), greedy selection on
constructed answers, and the one-pass ensemble against N separate passes."""

from __future__ import annotations

import numpy as np
import pytest

from softprompt.core.evaluation import encode_inputs, predict
from softprompt.core.inference import label_targets
from softprompt.core.multi_prompt import stack_prompts
from softprompt.core.prompts import SoftPrompt
from softprompt.core.tasks import Example, get_task
from softprompt.ensemble.predict import EnsembleInput, label_scores, vote_inputs
from softprompt.ensemble.selection import greedy_select, pairwise_disagreement, top_selection
from softprompt.ensemble.voting import combine, majority_vote, vote_classification

LABELS = ("negative", "positive")


def test_majority_wins_regardless_of_likelihood():
    scores = np.array([[-0.1, -3.0], [-2.0, -1.9], [-2.0, -1.8]])  # member 0 very sure of negative
    vote = vote_classification(scores, LABELS)
    assert vote.label == "positive" and vote.votes == {"negative": 1, "positive": 2}
    assert vote.members == ["negative", "positive", "positive"]
    assert vote.shares == pytest.approx({"negative": 1 / 3, "positive": 2 / 3})


def test_multiplicity_counts_as_that_many_votes():
    scores = np.array([[-0.1, -3.0], [-2.0, -1.9], [-2.0, -1.8]])
    vote = vote_classification(scores, LABELS, weights=[3, 1, 1])  # member 0 chosen three times
    assert vote.label == "negative" and vote.votes == {"negative": 3, "positive": 2}
    assert vote.shares == pytest.approx({"negative": 0.6, "positive": 0.4})
    replicated = vote_classification(scores[[0, 0, 0, 1, 2]], LABELS)
    assert (replicated.label, replicated.votes, replicated.shares) == (vote.label, vote.votes, vote.shares)


def test_tie_goes_to_the_higher_summed_log_likelihood():
    scores = np.array([[-0.1, -3.0], [-1.0, -0.9]])  # 1-1; sums: negative -1.1, positive -3.9
    assert vote_classification(scores, LABELS).label == "negative"
    scores = np.array([[-0.5, -0.6], [-4.0, -0.1]])  # 1-1; sums: negative -4.5, positive -0.7
    assert vote_classification(scores, LABELS).label == "positive"


def test_soft_vote_is_the_mean_of_member_probabilities():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 3)) * 3                                   # 4 members, 3 labels
    probabilities = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    vote = vote_classification(scores, ("a", "b", "c"), rule="soft")
    assert list(vote.shares.values()) == pytest.approx(probabilities.mean(axis=0).tolist())
    assert vote.label == "abc"[int(probabilities.mean(axis=0).argmax())]
    weighted = vote_classification(scores, ("a", "b", "c"), rule="soft", weights=[2, 1, 1, 0])
    expected = (2 * probabilities[0] + probabilities[1] + probabilities[2]) / 4
    assert list(weighted.shares.values()) == pytest.approx(expected.tolist())


def test_soft_vote_can_disagree_with_the_majority():
    scores = np.log(np.array([[0.99, 0.01], [0.45, 0.55], [0.45, 0.55]]))  # two members barely positive
    assert vote_classification(scores, LABELS).label == "positive"
    assert vote_classification(scores, LABELS, rule="soft").label == "negative"
    assert vote_classification(scores, LABELS, rule="mean_logprob").label == "negative"
    with pytest.raises(ValueError, match="unknown vote rule"):
        vote_classification(scores, LABELS, rule="max")


def test_combine_over_many_examples_equals_one_vote_per_example():
    scores = np.random.default_rng(1).normal(size=(5, 7, 3))                # [N, B, C]
    for rule in ("majority", "soft", "mean_logprob"):
        winners, shares = combine(scores, weights=[1, 2, 1, 1, 3], rule=rule)
        for b in range(7):
            vote = vote_classification(scores[:, b], ("a", "b", "c"), rule=rule, weights=[1, 2, 1, 1, 3])
            assert vote.label == "abc"[winners[b]] and list(vote.shares.values()) == pytest.approx(shares[b].tolist())


def test_free_text_votes_compare_normalised_answers():
    vote = majority_vote(["The dog.", "a cat", "dog"], [-1.0, -0.1, -2.0])
    assert vote.label == "The dog." and vote.votes == {"The dog.": 2, "a cat": 1}
    assert majority_vote(["x", "y"], [-1.0, -1.0]).label == "x"  # full tie: earliest member
    assert majority_vote(["x", "y"], [-1.0, -1.0], weights=[1, 2]).label == "y"


def _accuracy(gold):
    return lambda predicted: float((np.asarray(predicted) == gold).mean())


def _majority(answers):
    """A weighted majority over binary answers [K, B]; ties go to label 0."""
    return lambda weights: (weights @ answers > weights.sum() / 2).astype(int)


def test_top_n_can_lose_to_its_best_member_and_greedy_cannot():
    gold = np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    answers = np.array([[1, 1, 1, 1, 0, 0, 0, 0, 0, 1],    # the best candidate: 80%
                        [1, 1, 1, 0, 0, 0, 0, 1, 1, 0],    # two weaker ones making the same mistakes: 60%
                        [1, 1, 1, 0, 0, 0, 0, 1, 1, 0]])
    vote, accuracy = _majority(answers), _accuracy(gold)
    top = accuracy(vote(np.array(top_selection(3, 3))))
    assert top == 0.6 < 0.8                                  # top-3 votes the best member down
    picked = greedy_select(vote, accuracy, candidates=3, size=3)
    assert picked.score == 0.8 == picked.best_member_score and picked.multiplicities == (1, 0, 0)


def test_greedy_never_scores_below_its_best_member():
    rng = np.random.default_rng(0)
    for trial in range(30):
        gold = rng.integers(0, 2, size=25)
        answers = np.where(rng.random((6, 25)) < rng.uniform(0.5, 0.9, size=(6, 1)), gold, 1 - gold)
        vote, accuracy = _majority(answers), _accuracy(gold)
        picked = greedy_select(vote, accuracy, candidates=6, size=5)
        best = max(accuracy(answers[k]) for k in range(6))
        assert picked.score >= best == picked.best_member_score == max(picked.singles)
        assert picked.singles == tuple(accuracy(answers[k]) for k in range(6))
        assert picked.score == accuracy(vote(np.array(picked.multiplicities))) and sum(picked.multiplicities) <= 5


def test_pairwise_disagreement():
    assert pairwise_disagreement([["a", "b"], ["a", "b"]]) == 0.0
    assert pairwise_disagreement([["a", "b"], ["a", "c"], ["b", "c"]]) == pytest.approx((0.5 + 1 + 0.5) / 3)
    assert pairwise_disagreement([["a"]]) == 0.0


def test_one_pass_ensemble_equals_separate_single_prompt_passes(tiny_model):
    task = get_task("rte")
    examples = task.examples("validation", limit=6)
    encoded = encode_inputs(tiny_model, task, examples)
    prompts = [SoftPrompt.init(tiny_model, length=n, seed=s, init="sampled_vocab").embeddings
               for n, s in ((4, 0), (6, 1), (4, 2), (5, 3), (4, 4))]
    table = stack_prompts(prompts)
    targets = tuple(map(tuple, label_targets(tiny_model, task.label_words)))
    inputs = [EnsembleInput(ids, 0, (1,) * 5, targets, task.label_words) for ids in encoded]
    together, rows = label_scores(tiny_model, table, inputs)                 # B x [N, C]
    assert rows == 6 * 5 * 2                                                 # T5 labels are multi-token rows
    for n, prompt in enumerate(prompts):
        alone = predict(tiny_model, stack_prompts([prompt]), task, encoded)
        assert [task.label_words[scores[n].argmax()] for scores in together] == alone
    votes, _ = vote_inputs(tiny_model, table, inputs)
    assert [v.members for v in votes] == [[task.label_words[c] for c in s.argmax(-1)] for s in together]
    assert all(sum(v.votes.values()) == 5 for v in votes)


def test_equal_scores_go_to_the_ensemble_surer_of_the_gold_labels():
    """Two prompts right on both examples, each sure where the other hesitates: accuracy ties
    every ensemble, so without a tie-break greedy keeps the first prompt alone; the gold label's
    mean log-probability prefers the pair (the Table 3 campaign's case, where the best prompt was
    re-added four times)."""
    from softprompt.ensemble.scores import MemberScores

    task = get_task("sst2")
    examples = task.examples("validation", limit=2)
    gold = np.array([task.label_words.index(example.targets) for example in examples])

    def member(p_gold):            # [B, C] label log-likelihoods with these gold-label probabilities
        probabilities = np.empty((2, 2))
        probabilities[np.arange(2), gold] = p_gold
        probabilities[np.arange(2), 1 - gold] = 1 - np.array(p_gold)
        return np.log(probabilities)

    stacked = np.stack([member([0.9, 0.6]), member([0.6, 0.9])])                     # [K, B, C]
    tiebreak = MemberScores(task, examples, "accuracy", labels=stacked).gold_log_probability()
    assert tiebreak(np.array([2, 0])) == pytest.approx((np.log(0.9) + np.log(0.6)) / 2)
    assert tiebreak(np.array([1, 1])) == pytest.approx(np.log(0.75))
    assert tiebreak(np.array([1, 1])) > tiebreak(np.array([2, 0]))
    vote = lambda weights: combine(stacked, weights=weights)[0]                   # noqa: E731
    accuracy = lambda predicted: float(np.mean(predicted == gold))                # noqa: E731
    assert greedy_select(vote, accuracy, candidates=2, size=2).multiplicities == (1, 0)
    picked = greedy_select(vote, accuracy, candidates=2, size=2, tiebreak=tiebreak)
    assert picked.multiplicities == (1, 1) and picked.score == 1.0 == picked.best_member_score


def test_member_scores_of_free_text_vote_as_the_serving_path_does(tiny_model):
    """One `MemberScores` pass over free-text prompts: each prompt's answers and every weighted vote
    are what the replicate -> score -> vote path answers; `take` keeps the named prompts in order."""
    from softprompt.ensemble.scores import MemberScores

    task = get_task("squad")
    examples = [Example(task.input_text({"question": question, "context": "The cat sat on the red mat."}), answer,
                        {"answers": [answer]}) for question, answer in (("Who sat?", "The cat"), ("Where?", "on the mat"),
                                                                        ("Which colour?", "red"))]
    prompts = [SoftPrompt.init(tiny_model, length=4, seed=s, init="sampled_vocab").embeddings for s in range(3)]
    scores = MemberScores.compute(tiny_model, task, prompts, examples, metric="qa_f1")
    weights = (2, 0, 1)
    inputs = [EnsembleInput(ids, 0, weights, None, None, "majority", task.max_target_tokens)
              for ids in encode_inputs(tiny_model, task, examples)]
    votes, _ = vote_inputs(tiny_model, stack_prompts(prompts), inputs)
    assert scores.count == 3 and scores.vote(weights) == [v.label for v in votes]
    assert scores.answers() == [[v.members[k] for v in votes] for k in range(3)]
    assert scores.value(scores.vote(weights)) == pytest.approx(task.score(examples, [v.label for v in votes])["qa_f1"])
    assert scores.take([2, 0]).answers() == [scores.answers()[2], scores.answers()[0]]
    assert scores.gold_log_probability() is None
