"""Faults injected into real trials through the Python API's trial hook (never through a
campaign file: no field of a user-facing file exists for tests)."""

from __future__ import annotations

from pathlib import Path


class FailOnce:
    """Raises once in each trial, right after it reports `step` (a marker file per trial remembers),
    so Tune retries the trial from that checkpoint."""

    def __init__(self, step: int, folder: str | Path):
        self.step = step
        self.folder = str(folder)

    def __call__(self, trial_id: str, step: int) -> None:
        marker = Path(self.folder) / f"{trial_id}.failed-once"
        if step != self.step or marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(step))
        raise RuntimeError(f"fail-once drill: trial {trial_id} fails after reporting step {step}")


class KillStepServerOnce:
    """Kills the campaign's step server (fused trials) once, from the first trial that reports
    `step`: the trials waiting on it fail and are retried from their checkpoints on a new server."""

    def __init__(self, step: int, folder: str | Path, campaign: str):
        self.step, self.folder, self.campaign = step, str(folder), campaign

    def __call__(self, trial_id: str, step: int) -> None:
        from softprompt.search.step_server import end_step_servers

        marker = Path(self.folder) / "step-server.killed"
        if step != self.step or marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(trial_id)
        assert end_step_servers(self.campaign) == 1
