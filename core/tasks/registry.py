"""The built-in tasks, one table row each, and `get_task` (a built-in name or a task YAML path).

Formats follow T5 (`t5/data/glue_utils.py`, `t5/data/preprocessors.py`) without the task-name
prefix: GLUE-style tasks join `"<field>: <value>"` pairs in T5's field order (sorted field names
unless T5 fixes an order: MultiRC question/answer/paragraph, WiC sentence1/sentence2/word), and
the label words are TFDS's class names.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from softprompt.core.tasks import preprocessors as pre
from softprompt.core.tasks.errors import TaskDataError, UnknownTaskError
from softprompt.core.tasks.sources import JsonlSource, TfdsSource, flatten_multirc, flatten_record
from softprompt.core.tasks.spec import TaskSpec
from softprompt.core.tasks.user_tasks import load_user_task

_FREE_TEXT_TARGET_TOKENS = 32  # ReCoRD entities, WSC referents and SQuAD answers
_LABEL_TARGET_TOKENS = 8  # label words such as "not_equivalent" are a few pieces long


class _Builtin(NamedTuple):
    spec: TaskSpec  # reading JSONL files
    tfds_name: str  # the same task through TFDS


def _glue_style(
    name: str,
    *,
    features: tuple[str, ...],
    label_words: tuple[str, ...],
    tfds_name: str,
    metrics: tuple[str, ...] = ("accuracy",),
    source: JsonlSource | None = None,
    targets: Callable[..., list[pre.Target]] = pre.class_label_targets,
    strip_html: bool = False,
    max_input_tokens: int = 512,
) -> _Builtin:
    """A classification task in T5's `glue` format: `"<f1>: <v1> <f2>: <v2>"` -> label word."""
    spec = TaskSpec(
        name=name,
        fields=features,
        source=source or JsonlSource(name),
        format_inputs=functools.partial(pre.glue_inputs, feature_names=features, strip_html=strip_html),
        format_targets=functools.partial(targets, label_words=label_words),
        label_words=label_words,
        metrics=metrics,
        max_input_tokens=max_input_tokens,
        max_target_tokens=_LABEL_TARGET_TOKENS,
    )
    return _Builtin(spec, tfds_name)


def _squad_style(name: str, *, tfds_name: str) -> _Builtin:
    """Extractive QA: `"question: <q> context: <c>"` -> the first gold answer; EM/F1 over all."""
    spec = TaskSpec(
        name=name,
        fields=("question", "context"),
        source=JsonlSource(name),
        format_inputs=pre.squad_inputs,
        format_targets=pre.squad_targets,
        metrics=("qa_exact_match", "qa_f1"),
        max_target_tokens=_FREE_TEXT_TARGET_TOKENS,
        primary_metric="qa_f1",
    )
    return _Builtin(spec, tfds_name)


_TRUE_FALSE = ("False", "True")
_ENTAILMENT = ("entailment", "not_entailment")

_TABLE: tuple[_Builtin, ...] = (
    # ------------------------------------------------------------------ SuperGLUE
    _glue_style(
        "boolq", features=("passage", "question"), label_words=_TRUE_FALSE, tfds_name="super_glue/boolq"
    ),
    _glue_style(
        "cb",
        features=("hypothesis", "premise"),
        label_words=("entailment", "contradiction", "neutral"),
        metrics=("accuracy", "macro_f1"),
        tfds_name="super_glue/cb",
    ),
    _glue_style(
        "copa",
        features=("choice1", "choice2", "premise", "question"),
        label_words=("choice1", "choice2"),
        tfds_name="super_glue/copa",
    ),
    _glue_style(
        "multirc",
        features=("question", "answer", "paragraph"),
        label_words=_TRUE_FALSE,
        metrics=("exact_match", "f1"),
        source=JsonlSource("multirc", flatten=flatten_multirc),
        targets=pre.multirc_targets,
        strip_html=True,
        tfds_name="super_glue/multirc",
    ),
    _Builtin(
        TaskSpec(
            name="record",
            fields=("query", "entities", "passage"),
            source=JsonlSource("record", flatten=flatten_record),
            format_inputs=pre.record_inputs,
            format_targets=pre.record_targets,
            metrics=("qa_exact_match", "qa_f1"),
            max_target_tokens=_FREE_TEXT_TARGET_TOKENS,
        ),
        "super_glue/record",
    ),
    _glue_style(
        "rte", features=("hypothesis", "premise"), label_words=_ENTAILMENT, tfds_name="super_glue/rte"
    ),
    _glue_style(
        "wic",
        features=("sentence1", "sentence2", "word"),
        label_words=_TRUE_FALSE,
        tfds_name="super_glue/wic",
    ),
    _Builtin(
        TaskSpec(
            name="wsc",
            fields=("text", "span2_index", "span2_text"),
            source=JsonlSource("wsc"),
            format_inputs=pre.wsc_inputs,
            format_targets=pre.wsc_targets,
            metrics=("accuracy",),
            max_target_tokens=_FREE_TEXT_TARGET_TOKENS,
            scoring_values=pre.wsc_scoring_values,
        ),
        "super_glue/wsc.fixed",  # T5 reads the fixed spans; the JSONL files hold `wsc`
    ),
    # ----------------------------------------------------------------------- GLUE
    _glue_style(
        "sst2",
        features=("sentence",),
        label_words=("negative", "positive"),
        tfds_name="glue/sst2",
        max_input_tokens=128,
    ),
    _glue_style(
        "mrpc",
        features=("sentence1", "sentence2"),
        label_words=("not_equivalent", "equivalent"),
        metrics=("accuracy", "f1"),
        tfds_name="glue/mrpc",
    ),
    _glue_style(
        "qqp",
        features=("question1", "question2"),
        label_words=("not_duplicate", "duplicate"),
        metrics=("accuracy", "f1"),
        tfds_name="glue/qqp",
    ),
    # GLUE RTE holds SuperGLUE RTE's examples under GLUE's field names: read the same files.
    _glue_style(
        "glue_rte",
        features=("sentence1", "sentence2"),
        label_words=_ENTAILMENT,
        source=JsonlSource("rte", rename=(("premise", "sentence1"), ("hypothesis", "sentence2"))),
        tfds_name="glue/rte",
    ),
    # ------------------------------------------------ SQuAD and its out-of-domain MRQA sets
    _squad_style("squad", tfds_name="squad/v1.1"),
    *(
        _squad_style(f"mrqa_{subset}", tfds_name=f"mrqa/{subset}")
        for subset in ("bio_asq", "drop", "duo_rc", "race", "relation_extraction", "textbook_qa")
    ),
)
_BUILTINS: dict[str, _Builtin] = {builtin.spec.name: builtin for builtin in _TABLE}


def builtin_task_names() -> tuple[str, ...]:
    """The names `get_task` knows, sorted."""
    return tuple(sorted(_BUILTINS))


def is_task_file(name_or_path: str | os.PathLike) -> bool:
    """Whether `get_task` reads this as a task file's path rather than a built-in task's name."""
    if isinstance(name_or_path, os.PathLike):
        return True
    return name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path or os.sep in name_or_path


def get_task(name_or_path: str | os.PathLike, *, source: str = "jsonl") -> TaskSpec:
    """A built-in task by name, or a user task from the path of its YAML file.

    Args:
      name_or_path: e.g. `"rte"`, `"sst2"`, or `"examples/tasks/topics.yaml"`.
      source: where the records come from — `"jsonl"`: a built-in task's JSONL files
        (`<data_dir>/<task>/<split>.jsonl`) or a task file's own files; `"tfds"`: a built-in
        task's TFDS dataset (`super_glue/rte`, ...); `"tfds:NAME"`: the TFDS dataset NAME, e.g.
        one prepared from JSONL by `prepare_tfds` (`softprompt_rte`). TFDS needs the optional
        tensorflow-datasets; `data_dir` is then TFDS's data folder.

    Raises:
      UnknownTaskError: the name is not a built-in task (the message lists them).
      TaskDataError: the YAML file is malformed (the message names the field).
    """
    if source not in ("jsonl", "tfds") and not (source.startswith("tfds:") and len(source) > 5):
        raise ValueError(f"data source must be 'jsonl', 'tfds' or 'tfds:NAME', got {source!r}")
    if is_task_file(name_or_path):
        if source == "tfds":
            raise ValueError("data source 'tfds' names a built-in task's TFDS dataset; for a task file use "
                             "'tfds:NAME' or its `data: {tfds: NAME}`")
        spec = load_user_task(Path(name_or_path))
        if spec.name in _BUILTINS:
            raise TaskDataError(f"{name_or_path}: name {spec.name!r} is a built-in task's; choose another")
    elif name_or_path not in _BUILTINS:
        raise UnknownTaskError(name_or_path, _BUILTINS)
    else:
        spec = _BUILTINS[name_or_path].spec
        if source == "tfds":
            return dataclasses.replace(spec, source=TfdsSource(_BUILTINS[name_or_path].tfds_name))
    if source.startswith("tfds:"):
        return dataclasses.replace(spec, source=TfdsSource(source[len("tfds:"):]))
    return spec
