"""A campaign's report: the trial table (rich) and a PNG of every trial's validation curve.

Read from Ray Tune's experiment folder (its state and each trial's results), written beside it
(`trials.txt`, `curves.png`) and logged to the campaign's own MLflow run.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, NamedTuple, Sequence

TABLE_FILE = "trials.txt"
CURVES_FILE = "curves.png"


class TrialRow(NamedTuple):
    trial_id: str
    status: str                        # PENDING | RUNNING | PAUSED | TERMINATED | ERROR
    config: dict[str, Any]             # the sampled configuration
    step: int                          # last evaluated step
    steps: int                         # steps the configuration asks for
    best_score: float                  # nan before the first evaluation
    best_step: int
    failures: int
    curve: list[tuple[int, float]]     # (step, validation score) of every evaluation


def outcome(row: TrialRow) -> str:
    """The trial's Tune state, with "stopped" for a trial the scheduler ended before its last step."""
    stopped = row.status == "TERMINATED" and row.step < row.steps
    return f"{row.status} (stopped)" if stopped else row.status


# Table columns: header -> how to show a row's value.
_COLUMNS = {
    "trial": lambda r: r.trial_id,
    "state": outcome,
    "task": lambda r: str(r.config.get("task")),
    "lr": lambda r: _number(r.config.get("learning_rate")),
    "scaling": lambda r: str(r.config.get("parameter_scaling")),
    "batch": lambda r: str(r.config.get("batch_size")),
    "warmup": lambda r: str(r.config.get("warmup_steps")),
    "decay": lambda r: ("off" if r.config.get("decay_factor") is None
                        else f"x{r.config['decay_factor']}/{r.config.get('steps_per_decay')}"),
    "prompt": lambda r: f"{r.config.get('prompt_length')} {r.config.get('init')}",
    "seed": lambda r: str(r.config.get("seed")),
    "steps": lambda r: f"{r.step}/{r.steps}",
    "best score": lambda r: _number(r.best_score),
    "best step": lambda r: str(r.best_step),
    "fails": lambda r: str(r.failures),
}


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trial_rows(experiment_dir: str | Path) -> list[TrialRow]:
    """One row per trial, from the newest experiment state in `experiment_dir`."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(experiment_dir))
    frames = analysis.trial_dataframes
    rows = []
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        frame = frames.get(trial.trial_id)
        curve: list[tuple[int, float]] = []
        if frame is not None and {"step", "score"} <= set(frame.columns):
            curve = sorted({int(s): float(v) for s, v in zip(frame["step"], frame["score"])}.items())
        last = trial.last_result or {}
        rows.append(TrialRow(
            trial_id=trial.trial_id, status=trial.status, config=dict(trial.config),
            step=int(last.get("step", 0)), steps=int(last.get("steps", trial.config.get("steps", 0))),
            best_score=float(last.get("best_score", math.nan)), best_step=int(last.get("best_step", 0)),
            failures=int(trial.num_failures), curve=curve))
    return rows


def trial_table(rows: list[TrialRow], *, title: str = "trials"):
    """The rows as a `rich.table.Table`."""
    from rich.table import Table

    table = Table(*_COLUMNS, title=title)
    for row in rows:
        table.add_row(*(show(row) for show in _COLUMNS.values()))
    return table


def table_text(rows: list[TrialRow], *, title: str = "trials", width: int = 160) -> str:
    """The table rendered as plain text."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(trial_table(rows, title=title))
    return console.file.getvalue()


def plot_curves(rows: list[TrialRow], path: str | Path, *, title: str) -> Path:
    """A PNG of every trial's validation score against the training step."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    for row in rows:
        if row.curve:
            steps, scores = zip(*row.curve)
            axes.plot(steps, scores, marker="o", markersize=3, label=f"{row.trial_id} ({outcome(row).lower()})")
    axes.set_xlabel("training step")
    axes.set_ylabel("validation score")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    if any(row.curve for row in rows):
        axes.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return Path(path)


def write_report(experiment_dir: str | Path, rows: list[TrialRow], *, tracking=None, campaign: str,
                 extra: Sequence[Path] = ()) -> Path:
    """Writes `trials.txt` and `curves.png` into the experiment folder and, with `tracking`, logs
    both (and the `extra` files) to the campaign's MLflow run; returns the PNG's path."""
    folder = Path(experiment_dir)
    (folder / TABLE_FILE).write_text(table_text(rows, title=campaign))
    curves = plot_curves(rows, folder / CURVES_FILE, title=f"{campaign}: validation score per trial")
    if tracking is not None:
        tracking.log_campaign_artifacts(campaign, [folder / TABLE_FILE, curves, *extra])
    return curves
