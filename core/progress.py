"""A rich progress bar for training: step, loss, validation score, steps per second."""

from __future__ import annotations

import time

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class TrainProgress:
    """Context manager; `enabled=False` makes every call a no-op (e.g. inside Ray Tune trials).

    Where the console is not a terminal (a log file, CI), rich draws no live bar, so each
    evaluation is printed as one line instead.
    """

    def __init__(self, *, total: int, start: int = 0, enabled: bool = True) -> None:
        self._enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f}"), TextColumn("score {task.fields[score]}"),
            TextColumn("{task.fields[rate]} steps/s"), TimeRemainingColumn(),
            disable=not enabled)
        self._task = self._progress.add_task("train", total=total, completed=start,
                                             loss=float("nan"), score="-", rate="-")
        self._started, self._done, self._start, self._total = time.perf_counter(), 0, start, total
        self._loss = float("nan")

    def __enter__(self) -> "TrainProgress":
        self._progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.__exit__(*exc)

    def advance(self, *, loss: float) -> None:
        self._done += 1
        self._loss = loss
        self._progress.update(self._task, advance=1, loss=loss, rate=f"{self._rate():.2f}")

    def show_metric(self, score: float, best: float) -> None:
        self._progress.update(self._task, score=f"{score:.2f} (best {best:.2f})")
        if self._enabled and not self._progress.console.is_terminal:
            self._progress.console.print(f"train step {self._start + self._done}/{self._total}  loss {self._loss:.4f}  "
                                         f"score {score:.2f} (best {best:.2f})  {self._rate():.2f} steps/s")

    def _rate(self) -> float:
        return self._done / max(time.perf_counter() - self._started, 1e-9)
