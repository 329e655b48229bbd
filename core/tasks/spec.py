"""`TaskSpec`: one text-to-text task — its data, its formats, its label words and its metrics.

>>> from softprompt.core.tasks import get_task
>>> rte = get_task("rte")
>>> example = rte.examples("validation", limit=1)[0]
>>> example.inputs[:40], example.targets
('hypothesis: Christopher Reeve had an acc', 'not_entailment')
>>> rte.score([example], ["not_entailment"])
{'accuracy': 100.0}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from softprompt.core.tasks import metrics as metrics_lib
from softprompt.core.tasks.errors import TaskDataError
from softprompt.core.tasks.holdout import Holdout
from softprompt.core.tasks.sources import DataSource, PathLike


class Example(NamedTuple):
    """One text-to-text example.

    Attributes:
      inputs: the model's input text (without any task-name prefix).
      targets: the target text: a label word for classification tasks, else the answer.
      meta: what scoring and bookkeeping need: `idx` (the record's id), `label` (class index,
        -1 when unlabelled), `group` (MultiRC: (paragraph, question)), `answers` (every gold
        answer, ReCoRD/SQuAD).
    """

    inputs: str
    targets: str
    meta: dict[str, Any]


InputsFn = Callable[[Mapping[str, Any]], str]


class TargetsFn(Protocol):
    """`(record, *, training) -> [(target text, meta), ...]` (may be empty: record dropped)."""

    def __call__(self, record: Mapping[str, Any], *, training: bool) -> list[tuple[str, dict]]: ...


# (example, predicted text) -> (target value, predicted value), the values metrics compare.
ScoringValuesFn = Callable[[Example, str], tuple[Hashable, Hashable]]


def _is_training_split(split: str) -> bool:
    """`train`, and TFDS slices of it such as `train[:90%]`."""
    return split.split("[", 1)[0] == "train"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A text-to-text task.

    Attributes:
      name: the task's name (`"rte"`, or a user task's name).
      fields: the record fields a user must send to get a prediction, in input order.
      source: where records come from (`JsonlSource`, `TfdsSource`, `FileSource`).
      format_inputs: record -> input text; reads only `fields`.
      format_targets: record -> `[(target, meta), ...]`; reads the gold fields.
      label_words: the class label words, index = TFDS label id; None for free-text tasks.
      metrics: metric names (see `metrics.METRIC_NAMES`), reported in percent.
      max_input_tokens: token budget of the input text (prompt not included).
      max_target_tokens: token budget of the target text.
      primary_metric: the metric that selects checkpoints; None = the mean of `metrics`.
      scoring_values: (example, prediction) -> (target value, predicted value); None = the
        class indices for classification tasks, the stripped texts for free-text tasks.
    """

    name: str
    fields: tuple[str, ...]
    source: DataSource
    format_inputs: InputsFn
    format_targets: TargetsFn
    label_words: tuple[str, ...] | None = None
    metrics: tuple[str, ...] = ("accuracy",)
    max_input_tokens: int = 512
    max_target_tokens: int = 8
    primary_metric: str | None = None
    scoring_values: ScoringValuesFn | None = None

    def __post_init__(self):
        unknown = [name for name in self.metrics if name not in metrics_lib.METRIC_NAMES]
        if not self.metrics or unknown:
            raise ValueError(
                f"task {self.name!r}: metrics must be some of {metrics_lib.METRIC_NAMES}, got {self.metrics}"
            )
        if self.primary_metric is not None and self.primary_metric not in self.metrics:
            raise ValueError(
                f"task {self.name!r}: primary_metric {self.primary_metric!r} is not in {self.metrics}"
            )
        if self.label_words is not None and (
            len(self.label_words) < 2 or len(set(self.label_words)) != len(self.label_words)
        ):
            raise ValueError(f"task {self.name!r}: label_words must be 2 or more distinct words")

    @property
    def free_text(self) -> bool:
        """True when targets are free text (ReCoRD, WSC, SQuAD), not one of `label_words`."""
        return self.label_words is None

    # ------------------------------------------------------------------------------------- data

    def validate_record(self, record: Mapping[str, Any]) -> None:
        """Checks that a label-free record has every field in `fields`, well typed.

        Raises:
          TaskDataError: naming the missing or ill-typed field.
        """
        if not isinstance(record, Mapping):
            raise TaskDataError(f"{self.name}: a record must be a JSON object, got {type(record).__name__}")
        missing = [name for name in self.fields if name not in record]
        if missing:
            raise TaskDataError(
                f"{self.name}: record is missing field(s) {', '.join(map(repr, missing))}; "
                f"the task needs {', '.join(map(repr, self.fields))}"
            )
        for name in self.fields:
            value = record[name]
            if isinstance(value, str):
                try:
                    value.encode("utf-8")
                except UnicodeEncodeError as error:
                    raise TaskDataError(f"{self.name}: field {name!r} is not valid Unicode text "
                                        f"({error.reason} at position {error.start})") from None
        self.input_text(record)

    def input_text(self, record: Mapping[str, Any]) -> str:
        """The input text of a label-free record (what serving feeds the model).

        Raises:
          TaskDataError: naming a missing or ill-typed field.
        """
        try:
            return self.format_inputs(record)
        except TaskDataError as error:
            raise TaskDataError(f"{self.name}: {error}") from None

    def preprocess(self, record: Mapping[str, Any], *, training: bool = False) -> list[Example]:
        """record -> 0, 1 or more examples (`training` applies training-only filtering or
        duplication: WSC keeps correct referents, ReCoRD repeats per gold answer)."""
        targets = self.format_targets(record, training=training)
        if not targets:
            return []
        inputs = self.format_inputs(record)
        return [Example(inputs, target, meta) for target, meta in targets]

    def examples(
        self,
        split: str,
        *,
        data_dir: PathLike | None = None,
        limit: int | None = None,
        training: bool | None = None,
        holdout: Holdout | None = None,
        held_out: bool = False,
    ) -> list[Example]:
        """The examples of one split, in file order.

        Args:
          split: `"train"`, `"validation"`, ... (TFDS sources accept slices, `"train[:10%]"`).
          data_dir: where the source looks for data (see `sources.data_dirs`).
          limit: stop after this many examples.
          training: whether to apply training-only preprocessing; default: `split` is train
            and not `held_out`.
          holdout: records of the split set apart (the selection split); without `held_out`
            they are left out, with it only they are read.
          held_out: read the holdout's records instead of the rest.
        """
        if training is None:
            training = _is_training_split(split) and not held_out
        records: Iterable[Mapping[str, Any]] = self.source.records(split, data_dir=data_dir)
        if holdout is not None and holdout.size:
            rows = list(records)
            chosen = holdout.indices(len(rows))
            records = [row for number, row in enumerate(rows) if (number in chosen) == held_out]
        elif held_out:
            raise ValueError(f"{self.name}: held_out needs a holdout of one or more records")
        examples: list[Example] = []
        for number, record in enumerate(records):
            if limit is not None and len(examples) >= limit:
                break
            try:
                examples.extend(self.preprocess(record, training=training))
            except TaskDataError as error:
                raise TaskDataError(f"{self.name} {split} record {number}: {error}") from None
        return examples[:limit]

    # ---------------------------------------------------------------------------------- scoring

    def _values(self, example: Example, prediction: str) -> tuple[Hashable, Hashable]:
        if self.scoring_values is not None:
            return self.scoring_values(example, prediction)
        if self.label_words is not None:
            return (
                metrics_lib.label_index(example.targets, self.label_words),
                metrics_lib.label_index(prediction, self.label_words),
            )
        return example.targets.strip(), prediction.strip()

    def score(self, examples: Sequence[Example], predictions: Sequence[str]) -> dict[str, float]:
        """`{metric: value in percent}` of predicted strings against the examples' targets.

        A predicted string that is not a label word counts as wrong (T5 maps it to -1).
        """
        if len(examples) != len(predictions):
            raise ValueError(f"{len(examples)} examples but {len(predictions)} predictions")
        values = [self._values(example, prediction) for example, prediction in zip(examples, predictions)]
        inputs = metrics_lib.ScoringInputs(
            targets=[target for target, _ in values],
            predictions=[predicted for _, predicted in values],
            texts=list(predictions),
            answers=[example.meta.get("answers", [example.targets]) for example in examples],
            groups=[example.meta.get("group", number) for number, example in enumerate(examples)],
            num_classes=None if self.label_words is None else len(self.label_words),
        )
        return metrics_lib.compute_metrics(self.metrics, inputs)

    def primary_score(self, metrics: Mapping[str, float]) -> float:
        """The number checkpoints are selected by: `primary_metric`, else the mean of the task's
        metrics (CB: accuracy and macro-F1; MRPC/QQP: accuracy and F1; MultiRC: EM and F1a)."""
        names = (self.primary_metric,) if self.primary_metric else self.metrics
        missing = [name for name in names if name not in metrics]
        if missing:
            raise ValueError(f"{self.name}: metrics {missing} missing from {sorted(metrics)}")
        return float(np.mean([metrics[name] for name in names]))
