"""A task's records as a TFDS dataset, prepared on this machine (no download, no TensorFlow).

`prepare_tfds("rte", out_dir=...)` reads the task's records from its JSONL files and writes them
as a TFDS dataset `softprompt_rte` in the array_record format, in file order (shuffling off, so
"the first 500 validation examples" are the same records under either source). Tasks then read
it with `get_task("rte", source="tfds:softprompt_rte")` and `data_dir=out_dir` (`--data-source`,
`data_source:` in a campaign file, `data: {tfds: NAME}` in a task file).

TFDS's own builders (`super_glue/rte`, ...) download their data and need TensorFlow to prepare;
this is the offline path, and the way to put any task's data into TFDS's format.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable, Mapping, Sequence

from .errors import TaskDataError
from .sources import PathLike, import_tfds

DEFAULT_SPLITS = ("train", "validation")


def tfds_name(task_name: str) -> str:
    """The TFDS dataset name a task is prepared under: `softprompt_<task>` (snake case)."""
    return "softprompt_" + re.sub(r"[^0-9a-z]+", "_", task_name.lower()).strip("_")


def prepare_tfds(task: str | os.PathLike, *, out_dir: PathLike, data_dir: PathLike | None = None,
                 splits: Sequence[str] = DEFAULT_SPLITS) -> str:
    """Writes `task`'s records (read from `data_dir`'s JSONL, or a task file's own files) into
    `out_dir` as the TFDS dataset `tfds_name(task)`; returns that name. An existing preparation
    of the same name is replaced."""
    from .registry import get_task

    tfds = import_tfds()
    spec = get_task(task)
    records = {split: list(spec.source.records(split, data_dir=data_dir)) for split in splits}
    features = _features(tfds, [r for rows in records.values() for r in rows], task=spec.name)
    name = tfds_name(spec.name)
    builder_class = _builder_class(tfds, name, features, records)
    builder_class(data_dir=os.fspath(out_dir), file_format="array_record").download_and_prepare(
        download_config=tfds.download.DownloadConfig(download_mode=tfds.download.GenerateMode.FORCE_REDOWNLOAD))
    return name


def _builder_class(tfds, name: str, features, records: Mapping[str, list[dict]]):
    """A GeneratorBasedBuilder named `name` that yields `records` in order (not registered
    globally: readers open the prepared files by name and folder)."""
    from tensorflow_datasets.core import registered

    def info(self):
        return tfds.core.DatasetInfo(builder=self, features=features, disable_shuffling=True,
                                     description="prepared by softprompt from the task's JSONL records")

    def split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(rows) for split, rows in records.items()}

    def generate_examples(self, rows):
        for key, row in enumerate(rows):
            yield key, {field: row.get(field, _empty(feature)) for field, feature in features.items()}

    with registered.skip_registration():
        return type(name, (tfds.core.GeneratorBasedBuilder,), {
            "name": name, "VERSION": tfds.core.Version("1.0.0"), "_info": info,
            "_split_generators": split_generators, "_generate_examples": generate_examples})


def _features(tfds, rows: Iterable[Mapping[str, Any]], *, task: str):
    """A FeaturesDict from the records' value types: text, integers, floats, booleans, and lists
    of text or integers. Anything else is refused naming the field."""
    import numpy as np

    kinds: dict[str, Any] = {}
    for row in rows:
        for field, value in row.items():
            if value is None or field in kinds:
                continue
            kinds[field] = _kind(value, field=field, task=task)
    scalar = {"text": tfds.features.Text(), "int": tfds.features.Scalar(np.int64),
              "float": tfds.features.Scalar(np.float32), "bool": tfds.features.Scalar(np.bool_)}
    return tfds.features.FeaturesDict({
        field: tfds.features.Sequence(scalar[kind[1]]) if isinstance(kind, tuple) else scalar[kind]
        for field, kind in kinds.items()})


def _kind(value: Any, *, field: str, task: str):
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ("list", "text")
    if isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return ("list", "int")
    raise TaskDataError(f"task {task!r}: field {field!r} holds {type(value).__name__} values; a TFDS preparation "
                        "takes text, numbers, booleans and lists of text or integers")


def _empty(feature) -> Any:
    """A missing field's value in a record (the features are the union over all records)."""
    import numpy as np

    if feature.__class__.__name__ == "Sequence":
        return []
    return "" if feature.__class__.__name__ == "Text" else np.zeros((), feature.np_dtype).item()
