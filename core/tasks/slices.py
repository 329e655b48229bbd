"""Split slices in TFDS's syntax for file-based task data: `validation[500:]`, `train[:10%]`.

A slice names consecutive records of a split, so one file can hold two disjoint parts: e.g. an
ensemble chosen on `validation[500:]` and reported on the first 500 validation sentences. TFDS
sources slice natively; JSONL and CSV sources slice through `SplitSlice.select`. Bounds are
record positions (after MultiRC/ReCoRD flattening, as TFDS counts examples), negative from the
end, or percentages of the split rounded to the nearest record (TFDS's default rounding).
Written here rather than imported from TFDS, an optional extra that JSONL users do not install.

>>> part = parse_split("validation[500:]")
>>> part.name, part.rows(872)
('validation', range(500, 872))
>>> parse_split("train[:10%]").rows(4000), parse_split("train[-5:]").rows(20)
(range(0, 400), range(15, 20))
>>> parse_split("validation").whole
True
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple, TypeVar

from .errors import TaskDataError

_BOUND = r"-?\d+%?"
_SPLIT = re.compile(rf"(?P<name>[^\[\]:]+?)(?:\[(?P<start>{_BOUND})?:(?P<stop>{_BOUND})?\])?")

_OPEN = 2**62   # a split's length when no bound depends on it: open ends reach "the end"

T = TypeVar("T")


class SplitSlice(NamedTuple):
    """A split's name and the bounds of a slice of it (None: from the start / to the end)."""

    name: str
    start: str | None = None
    stop: str | None = None

    @property
    def whole(self) -> bool:
        return self.start is None and self.stop is None

    @property
    def needs_length(self) -> bool:
        """Whether resolving the bounds needs the split's record count (percentages, negatives)."""
        return any(bound is not None and (bound.endswith("%") or bound.startswith("-"))
                   for bound in (self.start, self.stop))

    def rows(self, length: int) -> range:
        """The record positions this slice names in a split of `length` records."""
        return range(length)[slice(_position(self.start, length), _position(self.stop, length))]

    def select(self, records: Iterable[T]) -> Iterator[T]:
        """The records of the slice, from the split's records in order."""
        if self.whole:
            return iter(records)
        if not self.needs_length:
            return itertools.islice(records, int(self.start or 0), None if self.stop is None else int(self.stop))
        rows = list(records)
        return (rows[position] for position in self.rows(len(rows)))


def parse_split(split: str) -> SplitSlice:
    """`"validation[500:]"` -> `SplitSlice("validation", "500", None)`.

    Raises:
      TaskDataError: naming the split when it is not `NAME` or `NAME[START:STOP]`.
    """
    match = _SPLIT.fullmatch(split.strip())
    if not match:
        raise TaskDataError(f"split {split!r} is not NAME or NAME[START:STOP] (e.g. 'validation[500:]', "
                            "'train[:10%]')")
    return SplitSlice(match["name"], match["start"], match["stop"])


def overlap(first: str, second: str, *, length: Callable[[str], int], second_limit: int | None = None) -> bool:
    """Whether two splits share a record; `second_limit` keeps only the second's first records
    (an evaluation's max_examples, one example per record). `length(name)` counts a split's
    records, asked only when a bound needs it."""
    a, b = parse_split(first), parse_split(second)
    if a.name != b.name:
        return False
    size = length(a.name) if a.needs_length or b.needs_length else _OPEN
    rows_a, rows_b = a.rows(size), b.rows(size)
    if second_limit is not None:
        rows_b = rows_b[:second_limit]
    return bool(rows_a) and bool(rows_b) and rows_a.start < rows_b.stop and rows_b.start < rows_a.stop


def _position(bound: str | None, length: int) -> int | None:
    if bound is None:
        return None
    if bound.endswith("%"):
        return round(length * int(bound[:-1]) / 100)
    return int(bound)
