"""The loader of an ensemble version's MLflow model (its `python_function` flavour names this
module): `mlflow.pyfunc.load_model("models:/NAME@production")` calls `_load_pyfunc(data_path)`
with the model's `data/` folder, and `.predict(records)` answers through the same
replicate -> score -> vote path as Ray Serve.

    >>> model = mlflow.pyfunc.load_model("models:/sst2-ensemble@production")   # doctest: +SKIP
    >>> model.predict([{"sentence": "a gorgeous, witty film"}])                  # doctest: +SKIP
    [{'label': 'positive', 'votes': {'positive': 5}, 'shares': {...}, 'members': [...], 'truncated': False}]

The frozen model is loaded by the name and dtype the manifest records and must carry the
manifest's fingerprint. Use it where MLflow's own tools are the platform (batch scoring,
`mlflow models serve`); Ray Serve (`softprompt serve`) batches many requests and ensembles
into one pass and is the fast path. No MLflow import here: MLflow imports this module.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

from softprompt.core.batching import encode_pair
from softprompt.core.sentinel import model_for
from softprompt.core.tasks import TaskDataError

from .loaded import check_servable, input_factory, load_model_folder, manifest_model, manifest_task, read_model_manifest
from .predict import vote_inputs


def _records(model_input: Any) -> list[Mapping[str, Any]]:
    """Records from what pyfunc hands over: a pandas DataFrame, a list of dicts, or one dict."""
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        return model_input.to_dict(orient="records")
    if isinstance(model_input, Mapping):
        columns = {key: value if isinstance(value, list) else [value] for key, value in model_input.items()}
        count = len(next(iter(columns.values()), []))
        return [{key: values[i] for key, values in columns.items()} for i in range(count)]
    if isinstance(model_input, Iterable) and not isinstance(model_input, (str, bytes)):
        return list(model_input)
    raise TaskDataError(f"expected records (a DataFrame, a list of objects or an object), got {type(model_input).__name__}")


class EnsemblePredictor:
    """An ensemble on its frozen model, answering records of its task."""

    def __init__(self, data_path: str | os.PathLike):
        manifest = read_model_manifest(data_path)
        self.model = model_for(manifest_model(manifest), manifest.target_format, dtype=manifest.dtype)
        self.loaded = load_model_folder(data_path, self.model)
        self.task = manifest_task(self.loaded.manifest)
        check_servable(self.loaded, self.task)
        self.make_input = input_factory(self.model, self.loaded, task=self.task)

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """One answer per record: the voted label, the weight behind each answer, the vote shares,
        each member's answer, and whether the input was cut to the task's length."""
        records = _records(model_input)
        for number, record in enumerate(records):
            try:
                self.task.validate_record(record)
            except TaskDataError as error:
                raise TaskDataError(f"record {number}: {error}") from None
        encoded = [encode_pair(self.model, self.task.input_text(record), "", max_input_tokens=self.task.max_input_tokens,
                               max_target_tokens=self.task.max_target_tokens) for record in records]
        votes, _ = vote_inputs(self.model, self.loaded.table, [self.make_input(pair.input_ids) for pair in encoded])
        return [{"label": v.label, "votes": v.votes, "shares": v.shares, "members": v.members,
                 "truncated": pair.truncated} for v, pair in zip(votes, encoded)]


def _load_pyfunc(data_path: str) -> EnsemblePredictor:
    """MLflow's entry point for the `python_function` flavour (`loader_module`)."""
    return EnsemblePredictor(data_path)
