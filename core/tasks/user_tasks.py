"""User tasks, declared in a small YAML file next to their JSONL or CSV data.

A classification task (see `examples/tasks/topics.yaml`)::

    name: topics
    data:                          # one file per split, relative to this YAML file
      train: topics/train.jsonl     # (or `data: {tfds: NAME}`: a TFDS dataset, e.g. one
      validation: topics/validation.csv   # prepared by `softprompt data prepare-tfds`)
    input_template: "headline: {headline}"   # record fields in braces
    label_field: topic             # holds a label word, or its index in label_words
    label_words: [business, science, sports]
    metric: [accuracy, macro_f1]   # one name or a list; checkpoints go by their mean
    max_input_tokens: 64           # optional, as is max_target_tokens

Quote label words YAML would read as booleans or numbers (`['no', 'yes']`, `'True'`). A
free-text task replaces `label_field` + `label_words` by `target_template: "{answer}"`.
Every mistake raises `TaskDataError` naming the file and the offending key.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from softprompt.core.tasks import preprocessors as pre
from softprompt.core.tasks.errors import TaskDataError
from softprompt.core.tasks.metrics import METRIC_NAMES
from softprompt.core.tasks.sources import FileSource, TfdsSource
from softprompt.core.tasks.spec import TaskSpec

_REQUIRED_KEYS = ("name", "data", "input_template")
_OPTIONAL_KEYS = (
    "label_field",
    "label_words",
    "target_template",
    "metric",
    "max_input_tokens",
    "max_target_tokens",
    "description",
)
_DATA_SUFFIXES = (".jsonl", ".json", ".csv")
_NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Metrics a user task may ask for, and what each needs.
_CLASSIFICATION_METRICS = ("accuracy", "f1", "macro_f1")
_FREE_TEXT_METRICS = ("accuracy", "qa_exact_match", "qa_f1")
_TEMPLATE_VALUE_TYPES = (str, int, float)
# Upper bounds: a request's work is bounded by them (each generated token reruns the forward).
MAX_INPUT_TOKENS = 4_096
MAX_TARGET_TOKENS = 128


# ------------------------------------------------------------------------------------ templates


def template_fields(template: str, *, key: str) -> tuple[str, ...]:
    """The field names a template uses, in order of first use (`"{a} and {b}"` -> ("a", "b")).

    Raises:
      TaskDataError: the template has unbalanced braces, or a placeholder that is not a plain
        field name (`{text}`; no `{0}`, `{a.b}`, `{a!r}` or `{a:>10}`).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise TaskDataError(
            f"{key!r}: malformed template {template!r} ({error}); write literal braces as {{{{ }}}}"
        ) from None
    names: list[str] = []
    for _, name, format_spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or format_spec or conversion:
            raise TaskDataError(
                f"{key!r}: placeholder {{{name}}} must be a plain field name such as {{text}}"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise TaskDataError(f"{key!r}: template {template!r} uses no field; put field names in braces")
    return tuple(names)


def render_template(record: Mapping[str, Any], *, template: str, fields: Sequence[str]) -> str:
    """The template filled with the record's fields (strings, or numbers written as text)."""
    values = {}
    for name in fields:
        value = pre.require_field(record, name)
        if isinstance(value, bool) or not isinstance(value, _TEMPLATE_VALUE_TYPES):
            raise pre.field_type_error(name, "a string or a number", value)
        values[name] = str(value)
    return template.format_map(values)


def _template_targets(record: Mapping[str, Any], *, training: bool, template: str, fields: Sequence[str]):
    del training
    meta = {"idx": record["idx"]} if "idx" in record else {}
    return [(render_template(record, template=template, fields=fields), meta)]


# ------------------------------------------------------------------------------------- checking


class _Checker:
    """Reads the keys of one task file, each failure naming the file and the key."""

    def __init__(self, config: Mapping[str, Any], origin: str):
        self.config = config
        self.origin = origin

    def error(self, key: str, message: str) -> TaskDataError:
        return TaskDataError(f"{self.origin}: {key!r} {message}")

    def text(self, key: str, *, default: str | None = None) -> str | None:
        value = self.config.get(key, default)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise self.error(key, f"must be a non-empty string, got {value!r}")
        return value

    def positive_int(self, key: str, *, default: int, most: int) -> int:
        value = self.config.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= most:
            raise self.error(key, f"must be an integer from 1 to {most}, got {value!r}")
        return value

    def words(self, key: str) -> tuple[str, ...]:
        value = self.config.get(key)
        if (
            not isinstance(value, list)
            or len(value) < 2
            or not all(isinstance(word, str) and word and word == word.strip() for word in value)
            or len(set(value)) != len(value)
        ):
            hint = ""
            if isinstance(value, list) and any(isinstance(word, (bool, int, float)) for word in value):
                hint = " (YAML reads yes/no/true/false and numbers as non-words: quote them, 'yes')"
            raise self.error(key, f"must be a list of 2 or more distinct words, got {value!r}{hint}")
        return tuple(value)

    def template(self, key: str) -> tuple[str, tuple[str, ...]] | None:
        """(template, the field names it uses), or None when the key is absent."""
        template = self.text(key)
        if template is None:
            return None
        try:
            return template, template_fields(template, key=key)
        except TaskDataError as error:
            raise TaskDataError(f"{self.origin}: {error}") from None

    def names(self, key: str, *, default: str) -> tuple[str, ...]:
        value = self.config.get(key, default)
        names = [value] if isinstance(value, str) else value
        if not isinstance(names, list) or not names or not all(isinstance(name, str) for name in names):
            raise self.error(key, f"must be a metric name or a list of them, got {value!r}")
        unknown = [name for name in names if name not in METRIC_NAMES]
        if unknown:
            raise self.error(key, f"has unknown metric(s) {unknown}; known: {', '.join(METRIC_NAMES)}")
        return tuple(dict.fromkeys(names))

    def data_files(self, key: str, *, base_dir: Path) -> tuple[tuple[str, str], ...]:
        value = self.config.get(key)
        if not isinstance(value, Mapping) or not value:
            raise self.error(key, "must map split names to data files, e.g. {train: train.jsonl}")
        files = []
        for split, file in value.items():
            where = f"{key}.{split}"
            if not isinstance(file, str):
                raise self.error(where, f"must be a file path, got {file!r}")
            path = base_dir / file
            if path.suffix.lower() not in _DATA_SUFFIXES:
                raise self.error(where, f"must be a {', '.join(_DATA_SUFFIXES)} file, got {file!r}")
            if not path.is_file():
                raise self.error(where, f"names a missing file: {path}")
            files.append((str(split), str(path)))
        return tuple(files)


# ---------------------------------------------------------------------------------------- loading


def parse_user_task(config: Any, *, base_dir: Path, origin: str = "<task>") -> TaskSpec:
    """A `TaskSpec` from the parsed YAML mapping; data paths are relative to `base_dir`."""
    if not isinstance(config, Mapping):
        raise TaskDataError(
            f"{origin}: a task file must be a YAML mapping of keys, got {type(config).__name__}"
        )
    check = _Checker(config, origin)
    unknown = [key for key in config if key not in _REQUIRED_KEYS + _OPTIONAL_KEYS]
    if unknown:
        known = ", ".join(_REQUIRED_KEYS + _OPTIONAL_KEYS)
        raise check.error(unknown[0], f"is not a task key; keys are: {known}")
    missing = [key for key in _REQUIRED_KEYS if key not in config]
    if missing:
        raise check.error(missing[0], "is required")

    name = check.text("name")
    if not _NAME_PATTERN.fullmatch(name):
        raise check.error("name", f"must be letters, digits, '_', '.' or '-', got {name!r}")
    check.text("description")
    input_template, fields = check.template("input_template")
    data = config.get("data")
    if isinstance(data, Mapping) and set(data) == {"tfds"}:          # data: {tfds: NAME}
        if not isinstance(data["tfds"], str) or not data["tfds"].strip():
            raise check.error("data.tfds", f"must name a TFDS dataset, e.g. softprompt_topics, got {data['tfds']!r}")
        source = TfdsSource(data["tfds"])
    else:
        source = FileSource(check.data_files("data", base_dir=base_dir))

    target = check.template("target_template")
    if target is not None:
        if "label_field" in config or "label_words" in config:
            raise check.error("target_template", "and label_field/label_words exclude each other: pick one")
        label_words = None
        format_targets = functools.partial(_template_targets, template=target[0], fields=target[1])
        allowed_metrics = _FREE_TEXT_METRICS
    else:
        if "label_field" not in config or "label_words" not in config:
            key = "label_words" if "label_field" in config else "label_field"
            raise check.error(key, "is required (or give target_template for a free-text task)")
        label_words = check.words("label_words")
        format_targets = functools.partial(
            pre.class_label_targets, label_words=label_words, label_field=check.text("label_field")
        )
        allowed_metrics = _CLASSIFICATION_METRICS

    metrics = check.names("metric", default="accuracy")
    for metric in metrics:
        if metric not in allowed_metrics:
            kind = "a free-text" if label_words is None else "a classification"
            raise check.error(
                "metric", f"{metric!r} does not apply to {kind} task; use {', '.join(allowed_metrics)}"
            )
    if "f1" in metrics and len(label_words) != 2:
        raise check.error(
            "metric", "'f1' (F1 of the second label word) needs exactly 2 label words; use macro_f1"
        )

    return TaskSpec(
        name=name,
        fields=fields,
        source=source,
        format_inputs=functools.partial(render_template, template=input_template, fields=fields),
        format_targets=format_targets,
        label_words=label_words,
        metrics=metrics,
        max_input_tokens=check.positive_int("max_input_tokens", default=512, most=MAX_INPUT_TOKENS),
        max_target_tokens=check.positive_int("max_target_tokens", default=8 if label_words else 32,
                                             most=MAX_TARGET_TOKENS),
    )


def load_user_task(path: str | Path) -> TaskSpec:
    """The task declared in a YAML file (see the module docstring for its keys).

    Raises:
      FileNotFoundError: no such file.
      TaskDataError: malformed YAML, or a key that is missing, unknown or ill-typed (named).
    """
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise TaskDataError(f"{path}: malformed YAML ({error})") from None
    return parse_user_task(config, base_dir=path.parent, origin=str(path))
