"""`TrainConfig`: everything that defines one prompt-tuning trial — the Table 6 knobs, the prompt,
the seed, the task and the model. A search campaign samples these; MLflow records them as params.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .optim import OptimizerConfig
from .reparam import REPARAMS
from .tasks.errors import TaskDataError
from .tasks.holdout import Holdout
from .tasks.slices import parse_split

TARGET_FORMATS = ("plain", "sentinel")
SELECTION_SPLIT = "selection"   # eval_split naming the held-out selection split (needs selection_examples)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    # What to tune for.
    task: str                               # built-in task name or path of a task YAML file
    model: str = "t5-tiny-random"           # built-in model name, .gguf file or HF directory
    dtype: str = "float32"                  # frozen weights: float32, bfloat16 or auto (prompt stays float32)
    data_dir: str | None = None             # JSONL data folder; None: $SOFTPROMPT_DATA_DIR, then shipped data
    data_source: str = "jsonl"              # jsonl | tfds | tfds:NAME (then data_dir is TFDS's folder)
    # The prompt (paper §3.2; default length 100 in the paper, 20 here to suit a laptop).
    prompt_length: int = 20
    init: str = "class_labels"              # random_uniform | sampled_vocab | class_labels | from_text | from_file
    init_text: str | None = None            # for from_text (the paper's task words for ReCoRD/WSC)
    init_path: str | None = None            # for from_file: a prompt artifact folder
    target_format: str = "plain"            # plain | sentinel (T5: targets start with <extra_id_0>, §2.2)
    reparam: str = "none"                   # none | residual: P + MLP(P) while training, folded at export (reparam.py)
    reparam_bottleneck: int = 64            # the residual MLP's hidden width
    # Table 6 (Appendix A.2); the paper's defaults: Adafactor, constant lr 0.3, batch 32, 30k steps.
    learning_rate: float = 0.3
    parameter_scaling: bool = False
    batch_size: int = 32
    steps: int = 30_000
    warmup_steps: int = 0                   # 0 = off
    decay_factor: float | None = None       # None = off
    steps_per_decay: int | None = None      # None = off
    weight_decay: float = 1e-5
    decay_rate: float = 0.8                 # Adafactor second-moment decay ("beta2 decay")
    # Evaluation and checkpoint selection (early stopping on the validation metric).
    eval_every: int = 1_000
    max_eval_examples: int | None = None
    eval_split: str = "validation"          # or "selection": the held-out training records pick checkpoints;
    train_split: str = "train"              #   either may be a slice, "validation[300:500]" (tasks/slices.py)
    seed: int = 0
    # The selection split (ensemble selection, `ensemble build --select greedy`): training records
    # held out with their own seed, never trained on. 0 = none held out.
    selection_examples: int = 0
    selection_seed: int = 0

    def __post_init__(self) -> None:
        _check(self.prompt_length >= 1, "prompt_length", "must be >= 1")
        _check(self.steps >= 1, "steps", "must be >= 1")
        _check(self.batch_size >= 1, "batch_size", "must be >= 1")
        _check(self.eval_every >= 1, "eval_every", "must be >= 1")
        _check(self.learning_rate > 0, "learning_rate", "must be > 0")
        _check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        _check(self.selection_examples >= 0, "selection_examples", "must be >= 0")
        _check(self.eval_split != SELECTION_SPLIT or self.selection_examples > 0, "eval_split",
               "'selection' needs selection_examples > 0 (the held-out records it evaluates on)")
        for field in ("eval_split", "train_split"):
            _check(_is_split(getattr(self, field)), field, f"{getattr(self, field)!r} is not NAME or NAME[START:STOP]")
        _check(self.reparam in REPARAMS, "reparam", f"must be one of {REPARAMS}")
        _check(self.reparam_bottleneck >= 1, "reparam_bottleneck", "must be >= 1")
        _check(self.target_format in TARGET_FORMATS, "target_format", f"must be one of {TARGET_FORMATS}")
        _check(self.dtype in ("float32", "bfloat16", "auto"), "dtype", "must be float32, bfloat16 or auto")
        from .models import model_reference, resolve_dtype

        if self.dtype == "auto":   # resolved once, so the trial's records name the dtype it ran in
            object.__setattr__(self, "dtype", resolve_dtype(self.dtype))
        # a folder or file as an absolute path: the prompt's record must find it from anywhere
        object.__setattr__(self, "model", model_reference(self.model))
        _check(self.data_source in ("jsonl", "tfds") or self.data_source.startswith("tfds:"), "data_source",
               "must be jsonl, tfds or tfds:NAME")
        _check((self.decay_factor is None) == (self.steps_per_decay is None), "decay_factor",
               "and steps_per_decay are set together or not at all")

    def optimizer(self) -> OptimizerConfig:
        return OptimizerConfig(learning_rate=self.learning_rate, parameter_scaling=self.parameter_scaling,
                               decay_rate=self.decay_rate, weight_decay=self.weight_decay,
                               warmup_steps=self.warmup_steps, decay_factor=self.decay_factor,
                               steps_per_decay=self.steps_per_decay)

    def selection_holdout(self) -> Holdout | None:
        """The training records held out for ensemble selection, or None."""
        return Holdout(self.selection_examples, self.selection_seed) if self.selection_examples else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every setting's default (the task has none)."""
        return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s): {', '.join(unknown)}")
        return cls(**values)


def _is_split(split: str) -> bool:
    try:
        parse_split(split)
    except TaskDataError:
        return False
    return True


class ConfigError(ValueError):
    """A `TrainConfig` field with a value it cannot take; `field` names it, `detail` says why."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"TrainConfig.{field} {detail}")
        self.field, self.detail = field, detail


def _check(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise ConfigError(field, message)
