"""Closed numeric intervals and the usual operations on lists of them."""

from intervals.core import Interval, merge, overlaps, total_length

__all__ = ["Interval", "merge", "overlaps", "total_length"]
