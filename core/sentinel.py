"""The "span corruption + sentinel" target option (paper §2.2): every target starts with T5's
first sentinel `<extra_id_0>`, as the span-corruption pre-training objective's targets do.

Implemented as a thin wrapper over the family's `format_target`, so training, rank
classification and decoding all see the same targets.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class SentinelTargets:
    """FamilyOps with `<extra_id_0>` in front of every target; everything else delegated."""

    inner: object
    sentinel_id: int

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def format_target(self, ids: Sequence[int]) -> list[int]:
        return [self.sentinel_id] + list(self.inner.format_target(ids))


def with_sentinel_targets(model):
    """`model` whose targets start with the first sentinel; T5-family models only."""
    sentinel = getattr(model.tokenizer, "sentinel_id", None)
    if sentinel is None:
        raise ValueError(f"target_format 'sentinel' needs a T5-family model with sentinel tokens, "
                         f"not {model.name!r} ({model.family})")
    return dataclasses.replace(model, ops=SentinelTargets(model.ops, sentinel(0)))
