"""The ensemble manifest: what a registered ensemble version holds (JSON, never pickle).

    {"format": "softprompt.ensemble/v1", "name": "sst2-ensemble", "task": "sst2",
     "model": "gemma3-270m", "dtype": "float32", "model_fingerprint": "…",
     "vote_rule": "majority", "metric": "accuracy", "target_format": "plain",
     "members": [{"run_id": "…", "artifact_uri": "…/prompt", "sha256": "…", "metric": …,
                  "multiplicity": 2}, …],
     "selection": {"method": "greedy", "metric": "accuracy", "size": 5, "split": "train",
                   "holdout": {"size": 500, "seed": 0}, "examples": 500, "score": …,
                   "best_member_score": …, "top_score": …, "history": […],
                   "candidates": [{…member row…, "selection_score": …}, …]},
     "task_source": null, "pool": null}

A member row (`Member`) is the one record of a prompt in an ensemble, written by
`store.prompts.prompt_member`; the greedy selection's candidate pool is a list of the same rows
(`EnsembleManifest.candidates`), each with its own score on the selection split.
`sha256` is that of the member's `prompt.safetensors`: a member whose file changed since the
ensemble was built is refused on load. `multiplicity` is the member's weight in the vote (greedy
selection with replacement may pick a prompt more than once). `target_format` is the members'
training target format (`plain`, or T5's `sentinel`, paper §2.2): an ensemble scores labels the
way its members were trained. `selection` says how the members were chosen. `pool` is the learned
vote's fitted combiner (vote rule `learned` only): `{"weights": [one real >= 0 per member], "bias":
[one real per label]}`; its weights, not the multiplicities, weigh that vote. Every field is
written, and a manifest missing one is refused as malformed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Mapping

from softprompt.core.config import TARGET_FORMATS

FORMAT = "softprompt.ensemble/v1"
MANIFEST_FILE = "manifest.json"
VOTE_RULES = ("majority", "soft", "mean_logprob", "learned")   # see softprompt.ensemble.voting
DTYPES = ("float32", "bfloat16")


MAX_NAME_LENGTH = 100
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class EnsembleError(ValueError):
    """An ensemble cannot be built or loaded as asked (with the reason)."""


def check_ensemble_name(name: str) -> str:
    """`name` if it can name a registered ensemble: letters, digits, '.', '_' and '-', starting
    with a letter or digit, at most MAX_NAME_LENGTH characters (no path separator, and no ':',
    '@' or '/', which references use). Otherwise an EnsembleError saying why.

    >>> check_ensemble_name("rte-ensemble")
    'rte-ensemble'
    """
    if not name:
        raise EnsembleError("invalid ensemble name: it is empty")
    if len(name) > MAX_NAME_LENGTH:
        raise EnsembleError(f"invalid ensemble name {name[:20]!r}…: {len(name)} characters, at most "
                            f"{MAX_NAME_LENGTH}")
    if not _NAME.fullmatch(name):
        raise EnsembleError(f"invalid ensemble name {name!r}: use letters, digits, '.', '_' and '-', "
                            "starting with a letter or digit")
    return name


@dataclasses.dataclass(frozen=True)
class Member:
    run_id: str            # the MLflow run (trial) the prompt came from
    artifact_uri: str      # where its prompt artifact folder lives
    sha256: str            # of prompt.safetensors
    metric: float          # its best validation metric (the trial's own selection metric)
    multiplicity: int = 1  # its weight in the vote

    def __post_init__(self) -> None:
        if not isinstance(self.multiplicity, int) or self.multiplicity < 1:
            raise EnsembleError(f"member {self.run_id}: multiplicity must be an integer >= 1, got {self.multiplicity!r}")

    def to_json(self, **extra: Any) -> dict[str, Any]:
        """The row as JSON, with `extra` keys (a candidate's `selection_score`)."""
        return dataclasses.asdict(self) | extra

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "Member":
        """A row written by `to_json` (its extra keys ignored)."""
        return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class EnsembleManifest:
    name: str
    task: str
    model: str
    model_fingerprint: str
    metric: str
    members: tuple[Member, ...]
    vote_rule: str = "majority"
    target_format: str = "plain"
    dtype: str = "float32"                        # the frozen weights' dtype (part of the fingerprint)
    selection: dict[str, Any] | None = None       # how the members were chosen (see the module doc)
    task_source: str | None = None                # a user task's YAML path (built-in tasks: None)
    pool: dict[str, list[float]] | None = None    # the learned vote's weights and bias (see the module doc)

    def __post_init__(self) -> None:
        if not self.members:
            raise EnsembleError(f"ensemble {self.name!r} has no members")
        if self.target_format not in TARGET_FORMATS:
            raise EnsembleError(f"ensemble {self.name!r}: unknown target format {self.target_format!r} "
                                f"({TARGET_FORMATS})")
        if self.vote_rule not in VOTE_RULES:
            raise EnsembleError(f"ensemble {self.name!r}: unknown vote rule {self.vote_rule!r} ({VOTE_RULES})")
        if self.dtype not in DTYPES:
            raise EnsembleError(f"ensemble {self.name!r}: unknown dtype {self.dtype!r} ({DTYPES})")
        if (self.vote_rule == "learned") != (self.pool is not None):
            raise EnsembleError(f"ensemble {self.name!r}: a pool belongs with the learned vote and only with it "
                                f"(vote rule {self.vote_rule!r}, pool {'given' if self.pool else 'missing'})")
        if self.pool is not None:
            self._check_pool(self.pool)

    def _check_pool(self, pool: Any) -> None:
        problem = None
        if not isinstance(pool, Mapping) or set(pool) != {"weights", "bias"}:
            problem = "needs exactly 'weights' and 'bias'"
        elif not all(isinstance(v, list) and v and all(_finite(x) for x in v) for v in pool.values()):
            problem = "its weights and bias must be non-empty lists of finite numbers"
        elif len(pool["weights"]) != len(self.members):
            problem = f"{len(pool['weights'])} weights for {len(self.members)} members"
        elif any(w < 0 for w in pool["weights"]) or not any(w > 0 for w in pool["weights"]):
            problem = "its weights must be >= 0, not all 0"
        if problem:
            raise EnsembleError(f"ensemble {self.name!r}: malformed pool: {problem}")

    @property
    def weights(self) -> tuple[int, ...]:
        """Each member's multiplicity, in member order."""
        return tuple(member.multiplicity for member in self.members)

    @property
    def vote_weights(self) -> tuple[float, ...]:
        """Each member's weight in this ensemble's vote: the pool's (learned vote), else its multiplicity."""
        return tuple(float(w) for w in self.pool["weights"]) if self.pool else tuple(map(float, self.weights))

    @property
    def candidates(self) -> tuple[Member, ...]:
        """The pool greedy selection chose the members from, best first (none for `top`)."""
        return tuple(Member.from_json(row) for row in (self.selection or {}).get("candidates", ()))

    @property
    def vote_bias(self) -> tuple[float, ...] | None:
        """The learned vote's per-label bias (None for the other rules)."""
        return tuple(float(b) for b in self.pool["bias"]) if self.pool else None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, source: str = "manifest") -> "EnsembleManifest":
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise EnsembleError(f"{source}: not a softprompt ensemble manifest (format {FORMAT!r})")
        try:
            members = tuple(Member.from_json(member) for member in data["members"])
            fields = {f.name: data[f.name] for f in dataclasses.fields(cls) if f.name != "members"}
        except (KeyError, TypeError) as error:
            raise EnsembleError(f"{source}: malformed ensemble manifest ({error!r})") from error
        return cls(members=members, **fields)

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True)

    @classmethod
    def loads(cls, text: str, *, source: str = "manifest") -> "EnsembleManifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise EnsembleError(f"{source}: manifest is not valid JSON ({error})") from error
        return cls.from_json(data, source=source)
