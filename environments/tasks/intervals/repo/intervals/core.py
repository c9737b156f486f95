"""Closed intervals `[start, end]`: both end points belong to the interval."""

from __future__ import annotations

from typing import Iterable, NamedTuple


class Interval(NamedTuple):
    start: float
    end: float

    def validate(self) -> "Interval":
        if self.start > self.end:
            raise ValueError(f"interval start {self.start} is after its end {self.end}")
        return self

    @property
    def length(self) -> float:
        return self.end - self.start


def overlaps(a: Interval, b: Interval) -> bool:
    """True when the two closed intervals share at least one point."""
    return a.start <= b.end and b.start <= a.end


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Merge overlapping intervals into a sorted list of disjoint intervals.

    Closed intervals that share a point, such as [1, 3] and [3, 5], overlap and are merged.
    """
    ordered = sorted(Interval(*i).validate() for i in intervals)
    merged: list[Interval] = []
    for current in ordered:
        if merged and current.start < merged[-1].end:
            last = merged[-1]
            merged[-1] = Interval(last.start, max(last.end, current.end))
        else:
            merged.append(current)
    return merged


def total_length(intervals: Iterable[Interval]) -> float:
    """Length of the union of the intervals (shared parts are counted once)."""
    return sum(i.length for i in merge(intervals))
