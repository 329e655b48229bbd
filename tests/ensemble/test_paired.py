"""`paired_test`: the exact McNemar test Table 3 and the demo use to say whether the ensemble's gap
to its best prompt is more than the examples' noise."""

from __future__ import annotations

from math import comb

import pytest

from softprompt.ensemble.evaluate import paired_test


def _two_sided_binomial(wins: int, losses: int) -> float:
    """The exact McNemar p-value written out: twice the smaller tail of Binomial(n, 1/2), at most 1."""
    n = wins + losses
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(wins, losses) + 1)) / 2 ** n)


@pytest.mark.parametrize("wins, losses", [(0, 0), (1, 1), (5, 0), (9, 2), (12, 20), (40, 22)])
def test_counts_and_p_value_of_the_discordant_examples(wins, losses):
    both, neither = 30, 7
    gold = ["pos"] * (wins + losses + both + neither)
    first = ["pos"] * wins + ["neg"] * losses + ["pos"] * both + ["neg"] * neither
    second = ["neg"] * wins + ["pos"] * losses + ["pos"] * both + ["neg"] * neither
    paired = paired_test(gold, first, second)
    assert (paired.first_only, paired.second_only) == (wins, losses)
    assert paired.p_value == pytest.approx(_two_sided_binomial(wins, losses))
    assert paired_test(gold, second, first).p_value == pytest.approx(paired.p_value)   # symmetric


def test_a_clear_win_is_significant_and_a_one_sentence_gap_is_not():
    gold = ["a"] * 300
    assert paired_test(gold, ["a"] * 300, ["a"] * 288 + ["b"] * 12).p_value < 0.001
    assert paired_test(gold, ["a"] * 299 + ["b"], ["a"] * 298 + ["b"] * 2).p_value == 1.0


def test_answers_for_other_examples_are_refused():
    with pytest.raises(ValueError, match="answers for 3, 2 and 3 examples"):
        paired_test(["a"] * 3, ["a"] * 2, ["a"] * 3)
