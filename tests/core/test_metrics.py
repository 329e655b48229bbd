"""Metrics on small cases whose values are worked out by hand (in the comments)."""

from __future__ import annotations

import pytest

from softprompt.core.tasks import Example, get_task
from softprompt.core.tasks import metrics
from softprompt.core.tasks.metrics import INVALID


def test_label_index_maps_unknown_words_to_invalid():
    words = ("entailment", "not_entailment")
    assert metrics.label_index("not_entailment", words) == 1
    assert metrics.label_index(" entailment\n", words) == 0
    assert metrics.label_index("Entailment", words) == INVALID
    assert metrics.label_index("", words) == INVALID


def test_accuracy():
    assert metrics.accuracy([0, 1, 1, 0], [0, 1, 0, INVALID]) == 50.0
    assert metrics.accuracy(["Paris", "4"], ["Paris", "5"]) == 50.0


def test_binary_f1_counts_invalid_predictions_as_wrong():
    # The invalid prediction at position 1 (target 1) becomes 0: predictions [1, 0, 0, 1, 1].
    # TP = 2 (positions 0, 4), FP = 1 (position 3), FN = 1 (position 1): P = R = F1 = 2/3.
    assert metrics.binary_f1([1, 1, 0, 0, 1], [1, INVALID, 0, 1, 1]) == pytest.approx(200 / 3)
    # An invalid prediction for a 0 target becomes 1: a false positive. P = 1/2, R = 1, F1 = 2/3.
    assert metrics.binary_f1([1, 0], [1, INVALID]) == pytest.approx(200 / 3)


def test_cb_macro_f1_and_primary_score():
    # targets:     entailment, entailment, contradiction, contradiction, neutral, neutral
    # predictions: entailment, contradiction, contradiction, contradiction, neutral, "maybe"
    # entailment:    TP 1, FP 0, FN 1 -> P 1,   R 1/2 -> F1 2/3
    # contradiction: TP 2, FP 1, FN 0 -> P 2/3, R 1   -> F1 4/5
    # neutral:       TP 1, FP 0, FN 1 -> P 1,   R 1/2 -> F1 2/3
    # macro-F1 = (2/3 + 4/5 + 2/3) / 3 = 32/45; accuracy = 4/6
    cb = get_task("cb")
    targets = ["entailment", "entailment", "contradiction", "contradiction", "neutral", "neutral"]
    predictions = ["entailment", "contradiction", "contradiction", "contradiction", "neutral", "maybe"]
    examples = [Example("x", target, {}) for target in targets]
    scores = cb.score(examples, predictions)
    assert scores["accuracy"] == pytest.approx(400 / 6)
    assert scores["macro_f1"] == pytest.approx(100 * 32 / 45)
    assert cb.primary_score(scores) == pytest.approx((400 / 6 + 100 * 32 / 45) / 2)
    assert metrics.macro_f1([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, INVALID], num_classes=3) == pytest.approx(
        100 * 32 / 45
    )


def test_mrpc_reports_accuracy_and_f1_of_equivalent():
    mrpc = get_task("mrpc")
    targets = ["equivalent", "equivalent", "not_equivalent", "not_equivalent", "equivalent"]
    examples = [Example("x", target, {}) for target in targets]
    predictions = ["equivalent", "banana", "not_equivalent", "equivalent", "equivalent"]
    scores = mrpc.score(examples, predictions)  # the binary F1 case above, through label words
    assert scores == pytest.approx({"accuracy": 60.0, "f1": 200 / 3})
    assert mrpc.primary_score(scores) == pytest.approx((60 + 200 / 3) / 2)


def _multirc_option(paragraph: int, question: int, answer: int, label: int) -> dict:
    return {
        "paragraph": "P.", "question": f"Q{question}?", "answer": f"A{answer}", "label": label,
        "idx": {"paragraph": paragraph, "question": question, "answer": answer},
    }


def test_multirc_exact_match_per_question_and_f1_over_answer_options():
    # question 0: options True, False, True  predicted True, False, True   -> all right
    # question 1: options False, True        predicted False, False        -> one wrong
    # question 2: option  True               predicted True                -> all right
    # EM = 2/3 questions. F1a over the 6 options: TP 3, FP 0, FN 1 -> P 1, R 3/4, F1 6/7.
    multirc = get_task("multirc")
    labels = [(0, 0, 0, 1), (0, 0, 1, 0), (0, 0, 2, 1), (0, 1, 3, 0), (0, 1, 4, 1), (1, 2, 5, 1)]
    examples = [e for label in labels for e in multirc.preprocess(_multirc_option(*label))]
    assert [e.meta["group"] for e in examples] == [(0, 0)] * 3 + [(0, 1)] * 2 + [(1, 2)]
    predictions = ["True", "False", "True", "False", "False", "True"]
    scores = multirc.score(examples, predictions)
    assert scores == pytest.approx({"exact_match": 200 / 3, "f1": 600 / 7})
    assert multirc.primary_score(scores) == pytest.approx((200 / 3 + 600 / 7) / 2)
    assert metrics.group_exact_match([1, 0], [1, 0], groups=["a", "b"]) == 100.0


@pytest.mark.parametrize(
    "text, normalized",
    [
        ("The  Cat.", "cat"),
        ("  An Apple, the  pie!", "apple pie"),
        ("Theater", "theater"),  # "the" only as a whole word
        ("U.S.A.", "usa"),
        ("a", ""),
    ],
)
def test_squad_normalisation(text, normalized):
    assert metrics.normalize_answer(text) == normalized


def test_squad_exact_match_and_f1_take_the_best_gold_answer():
    answers = [["Denver Broncos", "Broncos"], ["a cat sat down"], ["Paris"]]
    predictions = ["the Broncos", "The cat sat", "Lyon"]
    # EM: 1 (matches "Broncos"), 0, 0 -> 1/3
    # F1: 1; {cat, sat} vs {cat, sat, down}: P 1, R 2/3 -> 4/5; 0 -> mean (1 + 4/5 + 0) / 3 = 3/5
    assert metrics.qa_exact_match(answers, predictions) == pytest.approx(100 / 3)
    assert metrics.qa_f1(answers, predictions) == pytest.approx(60.0)
    squad = get_task("squad")
    examples = [Example("x", golds[0], {"answers": golds}) for golds in answers]
    assert squad.score(examples, predictions) == pytest.approx({"qa_exact_match": 100 / 3, "qa_f1": 60.0})


def test_record_scores_against_every_gold_entity():
    record = get_task("record")
    [example] = record.preprocess(
        {
            "passage": "P", "query": "Q", "entities": ["Lyon", "Paris"],
            "answers": ["Lyon", "Olympique Lyon"], "idx": {},
        }
    )
    assert record.score([example], ["olympique lyon"]) == {"qa_exact_match": 100.0, "qa_f1": 100.0}
    assert record.score([example], ["Paris"]) == {"qa_exact_match": 0.0, "qa_f1": 0.0}


@pytest.mark.parametrize(
    "prediction, referent, matches",
    [
        ("The trophy", "trophy", True),
        ("the fuzzy bunny", "bunny", True),  # one word set holds the other
        ("bunny", "fuzzy bunny", True),
        ("Bob", "Bob's hat", False),  # a possessive never matches a non-possessive
        ("suitcase", "trophy", False),
        ("", "trophy", False),
        ("the", "trophy", False),  # nothing left once determiners are dropped
    ],
)
def test_wsc_referent_matching(prediction, referent, matches):
    assert metrics.referent_matches(prediction, referent) is matches


def test_wsc_accuracy_compares_the_match_with_the_label():
    wsc = get_task("wsc")
    right = Example("x", "the trophy", {"label": 1})  # the candidate is the referent
    wrong = Example("x", "the suitcase", {"label": 0})  # the candidate is not the referent
    assert wsc.score([right, wrong], ["Trophy", "the trophy"]) == {"accuracy": 100.0}
    assert wsc.score([right, wrong], ["suitcase", "suitcase"]) == {"accuracy": 0.0}


def test_free_text_accuracy_strips_whitespace():
    inputs = metrics.ScoringInputs(
        targets=["4", "Paris"], predictions=["4", "paris"], texts=["4 ", "paris"],
        answers=[["4"], ["Paris"]], groups=[0, 1], num_classes=None,
    )
    assert metrics.compute_metrics(["accuracy", "qa_exact_match"], inputs) == {
        "accuracy": 50.0, "qa_exact_match": 100.0
    }


def test_scoring_errors():
    rte = get_task("rte")
    with pytest.raises(ValueError, match="1 examples but 2 predictions"):
        rte.score([Example("x", "entailment", {})], ["entailment", "entailment"])
    with pytest.raises(ValueError, match="zero examples"):
        rte.score([], [])
    with pytest.raises(ValueError, match="unknown metric"):
        metrics.compute_metrics(["bleu"], metrics.ScoringInputs([0], [0], ["x"], [["x"]], [0], 2))
    with pytest.raises(ValueError, match="missing"):
        rte.primary_score({"f1": 1.0})
