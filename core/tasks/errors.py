"""The two errors a task user sees: bad data, and a task name nobody knows."""

from __future__ import annotations

from collections.abc import Iterable


class TaskDataError(ValueError):
    """A record, data file or task file is malformed.

    The message always names what is wrong: the missing or ill-typed field, or the file and
    line number of a malformed line.
    """


class UnknownTaskError(KeyError, ValueError):
    """`get_task` got a name that is neither a built-in task nor a task file.

    Both a `KeyError` (a lookup that failed) and a `ValueError` (a bad argument), so callers
    catching either see it; the message lists the known names.
    """

    def __init__(self, name: str, known: Iterable[str]):
        self.name = name
        self.known = tuple(sorted(known))
        self.message = (
            f"unknown task {name!r}; built-in tasks are: {', '.join(self.known)} "
            "(or give the path of a task YAML file)"
        )
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError's own __str__ would wrap the message in quotes.
        return self.message
