"""`softprompt search report NAME --by AXIS`: a campaign's result against one axis — the mean and
standard deviation over seeds of each trial's best validation metric per axis value (the paper's
Figures 3a/3b), beside the campaign's designed prompts. Read from MLflow, drawn as a PNG, printed
as a table, and logged to the campaign's own run (PNG + CSV).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from softprompt.store import RunRecord, Store
from softprompt.store.names import BEST_PREFIX, ENDED

from .baselines import BaselineScore, recorded_baselines


class AxisPoint(NamedTuple):
    value: str                 # the axis value, as MLflow recorded the param
    mean: float
    std: float                 # population standard deviation over the trials (seeds)
    values: tuple[float, ...]  # each trial's metric


def _order_key(value: str):
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def axis_points(runs: Sequence[RunRecord], axis: str, metric: str = "score") -> list[AxisPoint]:
    """Per value of `axis` (a trial param), the mean and std of the runs' `best_<metric>`; runs
    that ended with a prompt only. Numeric values sort numerically."""
    key = BEST_PREFIX + metric
    groups: dict[str, list[float]] = {}
    for run in runs:
        if run.status in ENDED and key in run.metrics:
            if axis not in run.params:
                raise ValueError(f"the campaign's trials have no param {axis!r}; params are "
                                 + ", ".join(sorted(run.params)))
            groups.setdefault(run.params[axis], []).append(float(run.metrics[key]))
    return [AxisPoint(value, float(np.mean(values)), float(np.std(values)), tuple(values))
            for value, values in sorted(groups.items(), key=lambda item: _order_key(item[0]))]


def plot_axis(points: Sequence[AxisPoint], baselines: Sequence[BaselineScore], path: str | Path, *,
              axis: str, metric: str, title: str) -> Path:
    """Mean +- std per axis value (each trial a dot), the designed prompts as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, plot = plt.subplots(figsize=(6, 4))
    positions = np.arange(len(points))
    plot.errorbar(positions, [p.mean for p in points], yerr=[p.std for p in points], fmt="o-", capsize=4,
                  color="#c53", label="tuned prompts (mean ± std over seeds)")
    for position, point in zip(positions, points):
        plot.scatter([position] * len(point.values), point.values, s=12, color="#555", zorder=3)
    for baseline, colour in zip(baselines, ("#37a", "#7a3", "#a73", "#777")):
        plot.axhline(baseline.score, linestyle="--", color=colour, label=f"designed: {baseline.name[:40]}")
    plot.set_xticks(positions, [p.value for p in points])
    plot.set_xlabel(axis)
    plot.set_ylabel(f"best validation {metric}")
    plot.set_title(title, fontsize=9)
    plot.grid(alpha=0.3)
    plot.legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)


def write_points(points: Sequence[AxisPoint], path: str | Path, *, axis: str, metric: str) -> Path:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([axis, f"mean_best_{metric}", f"std_best_{metric}", "trials", "values"])
        for point in points:
            writer.writerow([point.value, f"{point.mean:.4f}", f"{point.std:.4f}", len(point.values),
                             " ".join(f"{v:.2f}" for v in point.values)])
    return Path(path)


class AxisReport(NamedTuple):
    points: list[AxisPoint]
    baselines: list[BaselineScore]
    picture: Path
    table: Path


def report_axis(store: Store, campaign: str, axis: str, *, metric: str = "score",
                folder: str | Path) -> AxisReport:
    """Reads the campaign's trials from the store, writes `by-<axis>.png` and `.csv` into
    `folder`, logs both to the campaign's run, and returns the points."""
    runs = store.trial_runs(campaign)
    if not runs:
        raise ValueError(f"no trial runs of campaign {campaign!r} in {store.display_uri}")
    points = axis_points(runs, axis, metric)
    if not points:
        raise ValueError(f"no trial of campaign {campaign!r} ended with best_{metric}")
    baselines = recorded_baselines(campaign, store)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    picture = plot_axis(points, baselines, folder / f"by-{axis}.png", axis=axis, metric=metric,
                        title=f"{campaign}: best validation {metric} by {axis}")
    table = write_points(points, folder / f"by-{axis}.csv", axis=axis, metric=metric)
    store.log_campaign_artifacts(campaign, [picture, table])
    return AxisReport(points, baselines, picture, table)
