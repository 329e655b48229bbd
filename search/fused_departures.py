"""The driver's side of leaving a step server's group (fused trials, `step_server.py`).

A fused trial leaves its server's group itself, before each report and when it ends. A trial whose
process died (killed, out of memory) cannot: until its retry joins again, or for good when it has
no retries left, the others would wait `fuse.window_ms` for it at every step. This Tune callback,
in the driver, tells the campaign's step servers that the trial left whenever Tune records that it
failed, is being retried, or ended.
"""

from __future__ import annotations

import logging

from ray.tune import Callback
from ray.tune.experiment import Trial

logger = logging.getLogger(__name__)


class FusedDepartures(Callback):
    """Sends `leave(trial_id)` to every step server of `campaign` when a trial fails, is retried or ends."""

    def __init__(self, campaign: str) -> None:
        self.campaign = campaign

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._left(trial)

    def on_trial_recover(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._left(trial)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._left(trial)

    def _left(self, trial: Trial) -> None:
        from .step_server import leave_step_servers

        try:
            leave_step_servers(self.campaign, trial.trial_id)
        except Exception as error:  # noqa: BLE001 - a server gone or unreachable holds no group to leave
            logger.debug("step servers of %s: could not record %s leaving: %s", self.campaign, trial, error)
