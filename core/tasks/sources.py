"""Where task records come from: JSONL files with TFDS field names, TFDS itself, CSV files.

A source yields *records*: plain dicts with TFDS's field names and Python values (str, int,
lists, dicts), one per TFDS example. Nested SuperGLUE layouts (MultiRC, ReCoRD) are flattened
here exactly as TFDS flattens them, so preprocessors see the same records whichever the source.

Built-in JSONL data lives at `<data_dir>/<task>/<split>.jsonl`; `data_dir` is, in order, the
argument, `$SOFTPROMPT_DATA_DIR`, then the data shipped with softprompt (`core/assets/data/`:
SST-2 validation + a 4,000-row train subset, RTE and CB).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib
import importlib.util
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from softprompt.core.tasks.errors import TaskDataError
from softprompt.core.tasks.slices import parse_split

DATA_DIR_ENV = "SOFTPROMPT_DATA_DIR"
SHIPPED_DATA_DIR = Path(__file__).resolve().parent.parent / "assets" / "data"

Record = dict[str, Any]
PathLike = str | os.PathLike


class DataSource(Protocol):
    """Anything that yields the records of one split."""

    def records(self, split: str, *, data_dir: PathLike | None = None) -> Iterator[Record]: ...


# ------------------------------------------------------------------------------------ file readers


def read_jsonl(path: PathLike) -> Iterator[Record]:
    """The JSON objects of a JSON Lines file; blank lines are skipped.

    Raises:
      TaskDataError: naming the file and line number of a line that is not a JSON object.
    """
    with open(path, encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise TaskDataError(f"{path}:{line_number}: malformed JSON ({error.msg})") from None
            if not isinstance(record, dict):
                raise TaskDataError(
                    f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}"
                )
            yield record


def read_csv(path: PathLike) -> Iterator[Record]:
    """The rows of a CSV file with a header line, as dicts of strings.

    Raises:
      TaskDataError: naming the file and line number of a row with too many or too few cells.
    """
    with open(path, encoding="utf-8-sig", newline="") as lines:
        reader = csv.DictReader(lines)
        try:
            for row in reader:
                if None in row or None in row.values():
                    raise TaskDataError(
                        f"{path}:{reader.line_num}: expected {len(reader.fieldnames or ())} "
                        "cells as in the header line"
                    )
                yield row
        except csv.Error as error:
            raise TaskDataError(f"{path}:{reader.line_num}: malformed CSV ({error})") from None


def read_records(path: PathLike) -> Iterator[Record]:
    """`read_csv` for a `.csv` file, `read_jsonl` otherwise."""
    return read_csv(path) if Path(path).suffix.lower() == ".csv" else read_jsonl(path)


# --------------------------------------------------------------- flattening nested SuperGLUE rows


def flatten_multirc(row: Record) -> Iterator[Record]:
    """One record per answer-option, as TFDS `super_glue/multirc`: `paragraph`, `question`,
    `answer`, `label`, `idx = {paragraph, question, answer}`. Already-flat rows pass through."""
    if "paragraph" in row:
        yield row
        return
    try:
        passage = row["passage"]
        for question in passage["questions"]:
            for answer in question["answers"]:
                yield {
                    "paragraph": passage["text"],
                    "question": question["question"],
                    "answer": answer["text"],
                    "label": int(answer["label"]) if "label" in answer else -1,
                    "idx": {"paragraph": row["idx"], "question": question["idx"], "answer": answer["idx"]},
                }
    except (KeyError, TypeError) as error:
        raise TaskDataError(f"MultiRC row {row.get('idx')!r} lacks the nested field {error}") from None


def flatten_record(row: Record) -> Iterator[Record]:
    """One record per query, as TFDS `super_glue/record`: `passage`, `query`, `entities` and
    `answers` (each the sorted set of their texts), `idx = {passage, query}`. Already-flat rows
    pass through."""
    if "query" in row:
        yield row
        return
    try:
        passage = row["passage"]
        text = passage["text"]
        entities = sorted({text[e["start"] : e["end"] + 1] for e in passage["entities"]})
        for qa in row["qas"]:
            yield {
                "passage": text,
                "query": qa["query"],
                "entities": entities,
                "answers": sorted({answer["text"] for answer in qa.get("answers", [])}),
                "idx": {"passage": row["idx"], "query": qa["idx"]},
            }
    except (KeyError, TypeError) as error:
        raise TaskDataError(f"ReCoRD row {row.get('idx')!r} lacks the nested field {error}") from None


def _renamed(record: Record, rename: tuple[tuple[str, str], ...]) -> Record:
    if not rename:
        return record
    mapping = dict(rename)
    return {mapping.get(key, key): value for key, value in record.items()}


# ------------------------------------------------------------------------------------------ JSONL


def data_dirs(data_dir: PathLike | None = None) -> list[Path]:
    """The data folders searched, in order: `data_dir` alone when given, else
    `$SOFTPROMPT_DATA_DIR` (when set) and the shipped data."""
    if data_dir is not None:
        return [Path(data_dir)]
    from_env = os.environ.get(DATA_DIR_ENV)
    return ([Path(from_env)] if from_env else []) + [SHIPPED_DATA_DIR]


@dataclasses.dataclass(frozen=True)
class JsonlSource:
    """Built-in task data at `<data_dir>/<directory>/<split>.jsonl`.

    Attributes:
      directory: the task's folder name, e.g. `"rte"`.
      flatten: turns one stored row into records (MultiRC/ReCoRD are stored nested).
      rename: `(stored name, record name)` pairs, e.g. GLUE RTE reads SuperGLUE's RTE files with
        `premise`/`hypothesis` renamed `sentence1`/`sentence2` (same examples, TFDS names).
    """

    directory: str
    flatten: Callable[[Record], Iterable[Record]] | None = None
    rename: tuple[tuple[str, str], ...] = ()

    def path(self, split: str, *, data_dir: PathLike | None = None) -> Path:
        """The first existing `<dir>/<directory>/<split>.jsonl` among `data_dirs(data_dir)`."""
        candidates = [base / self.directory / f"{split}.jsonl" for base in data_dirs(data_dir)]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"no {split!r} data for {self.directory!r}: looked for "
            f"{', '.join(map(str, candidates))}. Put the file there, or point --data-dir (data_dir) or "
            f"${DATA_DIR_ENV} at a folder holding it (layout: docs/tasks.md)"
        )

    def records(self, split: str, *, data_dir: PathLike | None = None) -> Iterator[Record]:
        """The split's records; `split` may be a slice, `"validation[500:]"` (see `slices`)."""
        part = parse_split(split)
        path = self.path(part.name, data_dir=data_dir)
        return part.select(_renamed(record, self.rename) for row in read_jsonl(path)
                           for record in (self.flatten(row) if self.flatten else (row,)))


@dataclasses.dataclass(frozen=True)
class FileSource:
    """User data: one JSONL or CSV file per split (`{"train": "train.jsonl", ...}` as pairs)."""

    files: tuple[tuple[str, str], ...]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(split for split, _ in self.files)

    def records(self, split: str, *, data_dir: PathLike | None = None) -> Iterator[Record]:
        """`data_dir`, when given, resolves relative file paths (default: as stored); `split` may be
        a slice, `"validation[500:]"` (see `slices`)."""
        files = dict(self.files)
        part = parse_split(split)
        if part.name not in files:
            raise TaskDataError(f"no {part.name!r} split; this task has: {', '.join(files)}")
        path = Path(files[part.name])
        if data_dir is not None and not path.is_absolute():
            path = Path(data_dir) / path
        return part.select(read_records(path))


# ------------------------------------------------------------------------------------------- TFDS


def import_tfds() -> Any:
    """`tensorflow_datasets`, imported on first use (an optional extra)."""
    try:
        return importlib.import_module("tensorflow_datasets")
    except ImportError as error:
        raise ImportError(
            "TFDS data sources need tensorflow-datasets, an optional extra: "
            "pip install 'softprompt[tfds]'. Without it, use JSONL files "
            f"(${DATA_DIR_ENV}/<task>/<split>.jsonl)."
        ) from error


def to_python(value: Any) -> Any:
    """A TFDS example (bytes, numpy scalars and arrays, nested dicts) as plain Python values."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, Mapping):
        return {key: to_python(item) for key, item in value.items()}
    if hasattr(value, "tolist"):  # numpy scalar or array
        return to_python(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_python(item) for item in value]
    return value


@dataclasses.dataclass(frozen=True)
class TfdsSource:
    """A TFDS dataset, e.g. `TfdsSource("super_glue/rte")`.

    Reads with `tfds.data_source` (random access over array_record files; no TensorFlow needed
    when the dataset was prepared in that format), and falls back to `tfds.load` when that fails
    and TensorFlow is installed. `data_dir` is TFDS's data folder (default: TFDS's own).
    """

    name: str
    download: bool = False  # let TFDS download and prepare a dataset that is not there yet

    def records(self, split: str, *, data_dir: PathLike | None = None) -> Iterator[Record]:
        tfds = import_tfds()
        data_dir = None if data_dir is None else os.fspath(data_dir)
        try:
            examples = tfds.data_source(self.name, split=split, data_dir=data_dir, download=self.download)
            rows: Iterable[Any] = (examples[i] for i in range(len(examples)))
        except Exception as error:  # not prepared as array_record, unknown split, ...
            if importlib.util.find_spec("tensorflow") is None:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                raise TaskDataError(
                    f"TFDS could not open {self.name!r} split {split!r} as array_record files "
                    f"({reason}); prepare it with file_format='array_record' or install TensorFlow"
                ) from error
            dataset = tfds.load(self.name, split=split, data_dir=data_dir, download=self.download)
            rows = tfds.as_numpy(dataset)
        for row in rows:
            yield to_python(row)
