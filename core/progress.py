"""Rich progress bars: training (step, loss, validation score, steps per second), and long
forward-only work (evaluation, ensemble scoring, model conversion) that the loops doing it advance
without knowing who shows the bar."""

from __future__ import annotations

import contextlib
import contextvars
import time
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

# The bar of the innermost `work_progress` block in this context, as an `advance(count)` function.
_advance: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar("advance", default=None)


@contextlib.contextmanager
def work_progress(description: str, total: int, *, enabled: bool = True) -> Iterator[None]:
    """Shows a bar on stderr (a terminal only: logs stay clean) while the block runs; the loops
    inside advance it with `advance_work` in the block's own unit (queries, tensors)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal or _advance.get() is not None:   # nested: the outer bar shows
        token = _advance.set(None)
        try:
            yield
        finally:
            _advance.reset(token)
        return
    with Progress(TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        task = progress.add_task(description, total=total)
        token = _advance.set(lambda count: progress.advance(task, count))
        try:
            yield
        finally:
            _advance.reset(token)


def advance_work(count: int = 1) -> None:
    """Advances the bar of the enclosing `work_progress` block, if any."""
    advance = _advance.get()
    if advance is not None:
        advance(count)


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
