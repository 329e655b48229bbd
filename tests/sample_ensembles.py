"""A registered ensemble of UNTRAINED prompts, without the search layer: for serving tests and
the serving load benchmark (its answers are only as good as random prompts).

Each prompt is logged as the `prompt/` artifact of its own finished run, exactly where a trial
leaves its best prompt, then the ensemble is registered as an MLflow model and `alias` moved to it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

from softprompt.core.models.base import FrozenModel
from softprompt.core.prompts import SoftPrompt
from softprompt.core.tasks import get_task, is_task_file
from softprompt.store import EnsembleManifest, RegisteredEnsemble, Store
from softprompt.store.names import FINISHED, TAG_MODEL, TAG_MODEL_FINGERPRINT, TAG_TASK
from softprompt.store.prompts import prompt_member


def register_sample_ensemble(store: Store, model: FrozenModel, *, name: str, task: str, seeds: Sequence[int],
                             experiment_id: str, length: int = 4, init: str = "random_uniform",
                             alias: str | None = "production", vote_rule: str = "majority",
                             multiplicities: Sequence[int] | None = None, pool: dict | None = None,
                             metrics: Sequence[float] | None = None) -> RegisteredEnsemble:
    """Registers one prompt per seed (`SoftPrompt.init(model, length, init, seed)`) as a new
    version of ensemble `name`; returns it. `pool`: the learned vote's {"weights", "bias"}
    (with `vote_rule="learned"`); `metrics`: each member's selection metric (default 0)."""
    spec = get_task(task)
    members, folders = [], []
    with tempfile.TemporaryDirectory() as folder:
        for number, seed in enumerate(seeds):
            prompt = SoftPrompt.init(model, length=length, init=init, seed=seed, task=spec.name,
                                     label_words=spec.label_words)
            path = prompt.save(Path(folder) / str(seed))
            run = store.client.create_run(experiment_id, run_name=f"{name}-sample-{seed}",
                                          tags={TAG_TASK: spec.name, TAG_MODEL: model.name,
                                                TAG_MODEL_FINGERPRINT: model.fingerprint})
            store.log_prompt(run.info.run_id, path)
            store.end_run(run.info.run_id, FINISHED)
            members.append(prompt_member(run.info.run_id, run.info.artifact_uri, path,
                                         metric=metrics[number] if metrics else 0.0,
                                         multiplicity=multiplicities[number] if multiplicities else 1))
            folders.append(path)
        manifest = EnsembleManifest(name=name, task=spec.name, model=model.name, model_fingerprint=model.fingerprint,
                                    metric=spec.primary_metric or spec.metrics[0], members=tuple(members),
                                    vote_rule=vote_rule, dtype=model.dtype,
                                    task_source=task if is_task_file(task) else None, pool=pool)
        return store.register_ensemble(manifest, folders, experiment_id=experiment_id, alias=alias)
