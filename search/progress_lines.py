"""A campaign's progress as one short line per trial event on stderr — in place of Ray Tune's
status table, which repeats every trial's full row every 30 seconds and is wider than a log's 80
columns. `softprompt --verbose` brings Tune's own table back."""

from __future__ import annotations

import sys
from typing import Callable, Sequence

from ray.tune import Callback
from ray.tune.experiment import Trial


# Short names for the axes, so a trial's line keeps to a log's 80 columns.
SHORT = {"learning_rate": "lr", "parameter_scaling": "scaling", "batch_size": "batch", "prompt_length": "length",
         "warmup_steps": "warmup", "decay_factor": "decay", "steps_per_decay": "every"}


def _short(trial: Trial) -> str:
    return trial.trial_id.rsplit("_", 1)[-1]


class TrialLines(Callback):
    """Prints `trial 00001 seed=1 lr=0.3 | step 100/300 score 83.00 (best 83.00)`-like lines.

    axes: the config keys that tell this campaign's trials apart (searched axes, seed, task)."""

    def __init__(self, axes: Sequence[str], *, write: Callable[[str], None] | None = None) -> None:
        self.axes = tuple(axes)
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))

    def _name(self, trial: Trial) -> str:
        values = []
        for axis in self.axes:
            value = trial.config.get(axis)
            if isinstance(value, float):
                value = f"{value:.3g}"
            elif isinstance(value, str) and "/" in value:          # a task file: its file name
                value = value.rsplit("/", 1)[-1]
            values.append(f"{SHORT.get(axis, axis)}={value}")
        return " ".join([f"trial {_short(trial)}", *values])[:48]

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self.write(f"{self._name(trial)} | started")

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info) -> None:
        score, best = result.get("score"), result.get("best_score")
        scores = f"score {score:.2f} (best {best:.2f})" if score is not None and best is not None else ""
        self.write(f"{self._name(trial)} | step {result.get('step', '?')}/{result.get('steps', '?')} {scores}")

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self.write(f"{self._name(trial)} | finished")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self.write(f"{self._name(trial)} | failed (its error: {trial.local_path or trial.path})")
