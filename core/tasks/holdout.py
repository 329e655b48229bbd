"""A held-out slice of a split: records set apart, with a recorded seed, that training never sees.

Ensemble selection scores candidate prompts on such a slice of the training data (the
*selection split*), so the split a Table 3 report uses (validation) is never the one the
ensemble was chosen on, and no member was trained on what it is selected by.

>>> holdout = Holdout(size=3, seed=1)
>>> sorted(holdout.indices(10))
[3, 5, 7]
>>> holdout.keeps(3, 10), holdout.keeps(4, 10)
(False, True)
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

_SALT = 0x5E1EC7   # keeps the holdout's draw apart from training's data order (seeded the same way)


class Holdout(NamedTuple):
    """`size` records of a split, drawn with `seed`; the same (size, seed, split length) always
    names the same records."""

    size: int
    seed: int = 0

    def indices(self, count: int) -> frozenset[int]:
        """The held-out record positions among `count` records (all of them if `size` >= `count`)."""
        return _indices(self.size, self.seed, count)

    def keeps(self, position: int, count: int) -> bool:
        """Whether training keeps record `position` (it is not held out)."""
        return position not in self.indices(count)


@functools.lru_cache(maxsize=32)
def _indices(size: int, seed: int, count: int) -> frozenset[int]:
    if size < 0:
        raise ValueError(f"a holdout size is >= 0, got {size}")
    order = np.random.default_rng([seed, _SALT]).permutation(count)
    return frozenset(order[:size].tolist())
