"""The names softprompt gives things in MLflow: tags, run kinds, metrics, artifact paths, states.

Plain strings, no MLflow import: layers that never open the store (a trial process) can still
name what the driver will record.
"""

from __future__ import annotations

# Tags of runs (and of experiments / registered models where noted).
TAG_KIND = "softprompt.kind"                     # KIND_* below
TAG_CAMPAIGN = "softprompt.campaign"             # also an experiment tag: the campaign it holds
TAG_TRIAL_ID = "softprompt.trial_id"
TAG_TASK = "softprompt.task"                     # the task's own name (a user task's `name:`)
TAG_TASK_SOURCE = "softprompt.task_source"       # what the campaign named: a built-in name or a YAML path
TAG_MODEL = "softprompt.model"
TAG_MODEL_FINGERPRINT = "softprompt.model_fingerprint"
TAG_NODE_ID = "softprompt.node_id"               # the Ray node the trial last reported from
TAG_ENSEMBLE = "softprompt.ensemble"             # an ensemble evaluation run: `name/version`
TAG_BASELINE = "softprompt.baseline"             # a baseline run: the designed prompt's name

KIND_TRIAL = "trial"                             # one Tune trial: params, curves, its best prompt
KIND_CAMPAIGN = "campaign"                       # campaign-wide artifacts (table, curves, reports)
KIND_BASELINE = "baseline"                       # a designed text prompt scored beside the trials
KIND_ENSEMBLE = "ensemble"                       # the run an ensemble version's MLflow model was logged by
KIND_ENSEMBLE_EVAL = "ensemble-eval"             # a Table 3 evaluation of an ensemble version

# Metrics.
METRIC_LOSS = "loss"
METRIC_SCORE = "score"
METRIC_RESTORED_FROM = "restored_from_step"      # logged at each restart of a trial from a checkpoint
BEST_PREFIX = "best_"
METRIC_BEST_STEP = "best_step"
METRIC_BEST_SCORE = BEST_PREFIX + METRIC_SCORE

# Artifact paths.
PROMPT_ARTIFACT_PATH = "prompt"                  # a trial's best prompt: prompt.safetensors + prompt.json
ENSEMBLE_ARTIFACT_PATH = "ensemble"              # an ensemble version's MLflow model (MLmodel + data/)

# Run states (MLflow's names).
RUNNING, FINISHED, KILLED, FAILED = "RUNNING", "FINISHED", "KILLED", "FAILED"
ENDED = (FINISHED, KILLED)                       # a trial that kept a prompt: trained out, or stopped early
