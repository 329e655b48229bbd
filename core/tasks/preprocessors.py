"""Record -> text-to-text preprocessors, after T5's GLUE/SuperGLUE/SQuAD preprocessors.

Lester et al. (2021) feed T5's formats *without* the leading task name, so for RTE T5's
`"rte hypothesis: <h> premise: <p>"` becomes `"hypothesis: <h> premise: <p>"`. Each task is two
small functions, both taking a record with TFDS field names:

- an *inputs* function, `record -> str`, which needs only the fields a user sends when asking
  for a prediction (serving calls it on label-free records), and
- a *targets* function, `(record, *, training) -> [(target, meta), ...]`, which reads the gold
  fields; it may return several targets (ReCoRD trains on every gold answer) or none (WSC
  trains only on examples whose candidate referent is the right one).

Every field is read through `text_field` / `int_field` / `text_list_field` /
`label_index_of`, which raise `TaskDataError` naming a missing or ill-typed field.
"""

from __future__ import annotations

import re
import string
from collections.abc import Mapping, Sequence
from typing import Any

from softprompt.core.tasks.errors import TaskDataError
from softprompt.core.tasks.metrics import INVALID, referent_matches
from softprompt.core.tasks.spec import Example

Record = Mapping[str, Any]
Target = tuple[str, dict[str, Any]]  # (target text, meta)

UNKNOWN_TARGET = "<unk>"  # T5's target for an example without a label (test splits)


# ----------------------------------------------------------------------------- field access


def require_field(record: Record, name: str) -> Any:
    """`record[name]`, or a `TaskDataError` naming the missing field."""
    if not isinstance(record, Mapping):
        raise TaskDataError(f"a record must be a JSON object (a mapping), got {type(record).__name__}")
    if name not in record:
        raise TaskDataError(f"record is missing field {name!r} (it has: {', '.join(map(str, record))})")
    return record[name]


def field_type_error(name: str, expected: str, value: Any) -> TaskDataError:
    """The error for field `name` holding `value` where `expected` was wanted."""
    return TaskDataError(f"field {name!r} must be {expected}, got {type(value).__name__} {value!r:.60}")


def text_field(record: Record, name: str) -> str:
    """`record[name]`, which must be a string."""
    value = require_field(record, name)
    if not isinstance(value, str):
        raise field_type_error(name, "a string", value)
    return value


def int_field(record: Record, name: str) -> int:
    """`record[name]`, which must be an integer (a bool is not one)."""
    value = require_field(record, name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise field_type_error(name, "an integer", value)
    return value


def _as_text_list(value: Any, name: str) -> list[str]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise field_type_error(name, "a list of strings", value)
    return list(value)


def text_list_field(record: Record, name: str) -> list[str]:
    """`record[name]`, which must be a list of strings."""
    return _as_text_list(require_field(record, name), name)


def label_index_of(record: Record, label_words: Sequence[str], *, field: str = "label") -> int:
    """The class index stored in `record[field]`: an index into `label_words` (TFDS's
    `ClassLabel` id; -1 means "no label", as in TFDS test splits), its decimal string (CSV files),
    or the label word itself."""
    value = require_field(record, field)
    if isinstance(value, str):
        word = value.strip()
        if word in label_words:
            return label_words.index(word)
        if word.lstrip("-").isdigit():
            value = int(word)
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int) and (value == INVALID or 0 <= value < len(label_words)):
        return value
    raise TaskDataError(
        f"field {field!r} must be a class index 0..{len(label_words) - 1} or one of "
        f"{list(label_words)}, got {value!r}"
    )


# ----------------------------------------------------------------------- GLUE-style classification


def glue_inputs(record: Record, *, feature_names: Sequence[str], strip_html: bool = False) -> str:
    """T5's `preprocessors.glue` inputs without the task name: `"<key1>: <value1> <key2>: ..."`.

    `strip_html` removes MultiRC's `<br>` (-> space) and `<b>`/`</b>` markup, as T5 does.

    >>> glue_inputs({"sentence1": "A cat sat.", "sentence2": "A cat sat down."},
    ...             feature_names=("sentence1", "sentence2"))
    'sentence1: A cat sat. sentence2: A cat sat down.'
    """
    joined = " ".join(f"{name}: {text_field(record, name)}" for name in feature_names)
    if strip_html:
        joined = re.sub("<(/)?b>", "", joined.replace("<br>", " "))
    return joined


def _meta(record: Record, *, index_key: str = "idx", **extra: Any) -> dict[str, Any]:
    """An example's meta: the record's id as `idx` (when it has one) plus `extra`."""
    meta = {"idx": record[index_key]} if index_key in record else {}
    meta.update(extra)
    return meta


def class_label_targets(
    record: Record, *, label_words: Sequence[str], training: bool, label_field: str = "label"
) -> list[Target]:
    """One target: the label word of the record's class (`<unk>` when it has no label)."""
    del training  # every labelled record is kept
    label = label_index_of(record, label_words, field=label_field)
    target = UNKNOWN_TARGET if label == INVALID else label_words[label]
    return [(target, _meta(record, label=label))]


def multirc_targets(record: Record, *, label_words: Sequence[str], training: bool) -> list[Target]:
    """A flattened MultiRC answer-option's label word; meta `group` = (paragraph, question) ids,
    the unit of MultiRC's exact-match metric."""
    index = require_field(record, "idx")
    if not isinstance(index, Mapping) or not {"paragraph", "question"} <= set(index):
        raise field_type_error("idx", "a mapping with keys 'paragraph', 'question', 'answer'", index)
    [(target, meta)] = class_label_targets(record, label_words=label_words, training=training)
    meta["group"] = (index["paragraph"], index["question"])
    return [(target, meta)]


# ------------------------------------------------------------------------------------------ WSC


def _find_span(words: list[str], span: str, near: int) -> int:
    """Position of the word (window of words) spelling `span`, allowing punctuation attached to
    it, nearest to position `near` (the SuperGLUE `wsc` indices are off in a few examples)."""
    width = len(span.split(" "))
    positions = sorted(range(len(words) - width + 1), key=lambda p: (abs(p - near), p))
    for position in positions:
        window = " ".join(words[position : position + width])
        if window.strip(string.punctuation) == span:
            return position
    raise TaskDataError(f"field 'span2_text' ({span!r}) is not a word of field 'text'")


def wsc_inputs(record: Record) -> str:
    """The WSC text with the pronoun (span 2) wrapped in `*`s, as T5's `wsc_simple` does
    (without its `wsc:` prefix): `"Mark told Pete ... in his book. *He* should have been ..."`."""
    words = text_field(record, "text").split(" ")
    pronoun = text_field(record, "span2_text")
    position = _find_span(words, pronoun, int_field(record, "span2_index"))
    width = len(pronoun.split(" "))
    window = " ".join(words[position : position + width])
    start = window.index(pronoun)
    marked = f"{window[:start]}*{pronoun}*{window[start + len(pronoun):]}"
    return " ".join(words[:position] + [marked] + words[position + width :])


def wsc_targets(record: Record, *, training: bool) -> list[Target]:
    """The candidate referent (span 1). Training keeps only records whose candidate is the
    pronoun's true referent (label 1); evaluation keeps all and scores whether the generated
    referent matches the candidate exactly when the label says it should."""
    label = int_field(record, "label") if "label" in record else INVALID
    if training and label != 1:
        return []
    return [(text_field(record, "span1_text"), _meta(record, label=label))]


def wsc_scoring_values(example: Example, prediction: str) -> tuple[int, int]:
    """(gold label, whether the prediction names the candidate referent): T5's WSC accuracy
    counts a prediction right when it names the candidate exactly when the candidate is right."""
    return example.meta.get("label", INVALID), int(referent_matches(prediction, example.targets))


# --------------------------------------------------------------------------------------- ReCoRD


def record_inputs(record: Record) -> str:
    """T5's `record` inputs without the task name:
    `"query: <query> entities: <e1>, <e2> passage: <passage>"`, with the `@highlight` lines of
    the passage joined into sentences."""
    passage = text_field(record, "passage")
    passage = re.sub(r"([.?!\"'])\n@highlight\n", r"\1 ", passage)
    passage = passage.replace("\n@highlight\n", ". ")
    entities = ", ".join(text_list_field(record, "entities"))
    return f"query: {text_field(record, 'query')} entities: {entities} passage: {passage}"


def _qa_targets(answers: list[str], record: Record, *, training: bool, index_key: str) -> list[Target]:
    """One target per gold answer when training (T5 duplicates the example per answer), else one
    target (the first answer) with every gold answer in meta for scoring."""
    if not answers:
        return [(UNKNOWN_TARGET, _meta(record, index_key=index_key, answers=[]))]
    chosen = answers if training else answers[:1]
    return [(answer, _meta(record, index_key=index_key, answers=answers)) for answer in chosen]


def record_targets(record: Record, *, training: bool) -> list[Target]:
    """ReCoRD's gold entities (TFDS field `answers`)."""
    answers = text_list_field(record, "answers") if "answers" in record else []
    return _qa_targets(answers, record, training=training, index_key="idx")


# ---------------------------------------------------------------------------------------- SQuAD


def squad_inputs(record: Record) -> str:
    """T5's `squad` inputs: `"question: <question> context: <context>"` (T5 also spaces out
    punctuation; softprompt keeps the text as given, so served questions need no rewriting)."""
    return f"question: {text_field(record, 'question')} context: {text_field(record, 'context')}"


def squad_answers(record: Record) -> list[str]:
    """The gold answer strings, from SQuAD's `{"text": [...], "answer_start": [...]}`, MRQA's
    list of strings, or a list of `{"text": ...}` objects."""
    answers = require_field(record, "answers")
    if isinstance(answers, Mapping):
        return _as_text_list(answers.get("text"), "answers.text")
    if isinstance(answers, (list, tuple)) and answers and all(isinstance(a, Mapping) for a in answers):
        return _as_text_list([answer.get("text") for answer in answers], "answers[].text")
    return _as_text_list(answers, "answers")


def squad_targets(record: Record, *, training: bool) -> list[Target]:
    """The first gold answer, with every gold answer in meta (T5 trains SQuAD on the first
    answer only, so `training` changes nothing)."""
    del training
    index_key = next((key for key in ("id", "qid", "idx") if key in record), "id")
    return _qa_targets(squad_answers(record), record, training=False, index_key=index_key)
