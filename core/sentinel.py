"""Target formats (paper §2.2): `plain`, or `sentinel`, where every target starts with T5's first
sentinel `<extra_id_0>`, as the span-corruption pre-training objective's targets do.

`model_for` is THE way to the frozen model for a target format (training, the step server, the
Python API, ensemble building, evaluation, promotion and serving all call it). The sentinel format
is a thin wrapper over the family's `format_target`, so training, rank classification and
decoding all see the same targets.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from .config import TARGET_FORMATS

if TYPE_CHECKING:
    from .models.base import FrozenModel


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


def model_for(model: "str | FrozenModel", target_format: str = "plain", *, dtype: str = "float32") -> "FrozenModel":
    """The frozen model `model` names (loaded in `dtype`, once per process: `load_model`'s cache),
    or `model` itself, formatting targets as `target_format` says. Idempotent: a model already
    wrapped for a target format is first unwrapped, so `model_for(model_for(m, "sentinel"),
    "sentinel")` prefixes one sentinel, not two. ValueError for an unknown format, or `sentinel`
    on a model without sentinel tokens."""
    if isinstance(model, str):
        from .models import load_model

        model = load_model(model, dtype=dtype)
    if isinstance(model.ops, SentinelTargets):
        model = dataclasses.replace(model, ops=model.ops.inner)
    if target_format == "plain":
        return model
    if target_format == "sentinel":
        return with_sentinel_targets(model)
    raise ValueError(f"unknown target format {target_format!r}; choose one of {TARGET_FORMATS}")
