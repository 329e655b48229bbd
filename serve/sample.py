"""A registered ensemble of UNTRAINED prompts, without the search layer: for smoke tests, demos
and load tests of the server (its answers are only as good as random prompts).

    >>> registered = register_sample_ensemble(client, model, name="sst2-demo", task="sst2",
    ...                                       seeds=(0, 1, 2), experiment_id=experiment_id)  # doctest: +SKIP

Each prompt is logged as the `prompt/` artifact of its own finished MLflow run, exactly where a
trial leaves its best prompt, then the manifest is registered and `alias` moved to it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from mlflow.tracking import MlflowClient

from softprompt.core.models.base import FrozenModel
from softprompt.core.prompts import TENSOR_FILE, SoftPrompt
from softprompt.core.tasks import get_task
from softprompt.ensemble.manifest import EnsembleManifest, Member
from softprompt.ensemble.registry import RegisteredEnsemble, file_sha256, register
from softprompt.tracking import PROMPT_ARTIFACT_PATH, TAG_MODEL, TAG_MODEL_FINGERPRINT, TAG_TASK


def register_sample_ensemble(client: MlflowClient, model: FrozenModel, *, name: str, task: str,
                             seeds: Sequence[int], experiment_id: str, length: int = 4,
                             init: str = "random_uniform", alias: str | None = "production",
                             vote_rule: str = "majority") -> RegisteredEnsemble:
    """Registers one prompt per seed (`SoftPrompt.init(model, length, init, seed)`) as a new
    version of ensemble `name`; returns it."""
    spec = get_task(task)
    members = []
    with tempfile.TemporaryDirectory() as folder:
        for seed in seeds:
            prompt = SoftPrompt.init(model, length=length, init=init, seed=seed, task=spec.name,
                                     label_words=spec.label_words)
            path = prompt.save(Path(folder) / str(seed))
            run = client.create_run(experiment_id, run_name=f"{name}-sample-{seed}",
                                    tags={TAG_TASK: spec.name, TAG_MODEL: model.name,
                                          TAG_MODEL_FINGERPRINT: model.fingerprint})
            client.log_artifacts(run.info.run_id, str(path), PROMPT_ARTIFACT_PATH)
            client.set_terminated(run.info.run_id, "FINISHED")
            members.append(Member(run.info.run_id, f"{run.info.artifact_uri}/{PROMPT_ARTIFACT_PATH}",
                                  file_sha256(path / TENSOR_FILE), metric=0.0))
    manifest = EnsembleManifest(name=name, task=spec.name, model=model.name, model_fingerprint=model.fingerprint,
                                metric=spec.primary_metric or spec.metrics[0], members=tuple(members),
                                vote_rule=vote_rule)
    return register(client, manifest, experiment_id=experiment_id, alias=alias)
