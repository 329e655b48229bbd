"""A campaign's report: the trial table (rich; the columns that vary, so it reads in 80 columns),
every column as CSV, and a PNG of every trial's validation curve.

Read from Ray Tune's experiment folder (its state and each trial's results), written beside it
(`trials.txt`, `curves.png`) and logged to the campaign's own MLflow run.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

TABLE_FILE = "trials.txt"
CSV_FILE = "trials.csv"
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
    fused: float = 0.0                 # mean trials per fused step (0: its steps were its own)


def outcome(row: TrialRow) -> str:
    """The trial's Tune state, with "stopped" for a trial the scheduler ended before its last step."""
    stopped = row.status == "TERMINATED" and row.step < row.steps
    return f"{row.status} (stopped)" if stopped else row.status


# Every column of the full table (trials.csv): header -> how to show a row's value.
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
    "length": lambda r: str(r.config.get("prompt_length")),
    "init": lambda r: str(r.config.get("init")),
    "seed": lambda r: str(r.config.get("seed")),
    "steps": lambda r: f"{r.step}/{r.steps}",
    "best score": lambda r: _number(r.best_score),
    "best step": lambda r: str(r.best_step),
    "fails": lambda r: str(r.failures),
    "fused": lambda r: f"x{r.fused:.1f}" if r.fused else "-",
}
_ALWAYS = ("trial", "state", "steps", "best score")   # the short table keeps these, and what varies


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


EXTENSIONS = "extensions"     # <campaign folder>/extensions/<k>/: the Tune experiment of extension k (extend.py)


def trial_rows(experiment_dir: str | Path) -> list[TrialRow]:
    """One row per trial, from the newest experiment state in `experiment_dir`, then in each of
    its extensions' folders (`search extend`), oldest first."""
    extensions = sorted((path.parent for path in Path(experiment_dir, EXTENSIONS).glob("*/experiment_state-*.json")),
                        key=lambda path: int(path.name))
    return _tune_rows(experiment_dir) + [row for path in dict.fromkeys(extensions) for row in _tune_rows(path)]


def _tune_rows(experiment_dir: str | Path) -> list[TrialRow]:
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
        groups = [g for g in (frame["fused_group"] if frame is not None and "fused_group" in frame.columns else [])
                  if g and g == g]
        rows.append(TrialRow(
            trial_id=trial.trial_id, status=trial.status, config=dict(trial.config),
            step=int(last.get("step", 0)), steps=int(last.get("steps", trial.config.get("steps", 0))),
            best_score=float(last.get("best_score", math.nan)), best_step=int(last.get("best_step", 0)),
            failures=int(trial.num_failures), curve=curve, fused=float(np.mean(groups)) if groups else 0.0))
    return rows


def shown_columns(rows: list[TrialRow]) -> list[str]:
    """The short table's columns: trial, state, steps and best score, plus every column whose
    value differs between trials (what the campaign searched); "fails" only when one failed."""
    varying = [name for name, show in _COLUMNS.items() if name not in _ALWAYS and name not in ("fails", "fused")
               and len({show(row) for row in rows}) > 1]
    failed = ["fails"] if any(row.failures for row in rows) else []
    fused = ["fused"] if any(row.fused for row in rows) else []
    return ["trial", "state", *varying, "steps", "best score", *failed, *fused]


def _short_id(row: TrialRow) -> str:
    return row.trial_id.rsplit("_", 1)[-1]


def trial_table(rows: list[TrialRow], *, title: str = "trials", columns: list[str] | None = None):
    """The rows as a `rich.table.Table` of the `shown_columns` (or the ones asked for)."""
    from rich.table import Table

    columns = columns or shown_columns(rows)
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(_short_id(row) if name == "trial" else _COLUMNS[name](row) for name in columns))
    return table


def table_text(rows: list[TrialRow], *, title: str = "trials", width: int = 80) -> str:
    """The short table rendered as plain text (80 columns: it reads in a log file)."""
    from rich.console import Console

    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(trial_table(rows, title=title))
    return console.file.getvalue()


def write_csv(rows: list[TrialRow], path: str | Path) -> Path:
    """Every column of every trial, as CSV."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(list(_COLUMNS))
        for row in rows:
            writer.writerow([show(row) for show in _COLUMNS.values()])
    return Path(path)


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


def write_report(experiment_dir: str | Path, rows: list[TrialRow], *, store=None, campaign: str,
                 extra: Sequence[Path] = ()) -> Path:
    """Writes `trials.txt` (the short table), `trials.csv` (every column) and `curves.png` into the
    experiment folder and, with `store`, logs them (and the `extra` files) to the campaign's MLflow
    run; returns the PNG's path."""
    folder = Path(experiment_dir)
    (folder / TABLE_FILE).write_text(table_text(rows, title=campaign))
    write_csv(rows, folder / CSV_FILE)
    curves = plot_curves(rows, folder / CURVES_FILE, title=f"{campaign}: validation score per trial")
    if store is not None:
        store.log_campaign_artifacts(campaign, [folder / TABLE_FILE, folder / CSV_FILE, curves, *extra])
    return curves
