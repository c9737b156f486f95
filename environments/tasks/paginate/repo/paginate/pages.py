"""A `Paginator` cuts a sequence into pages of `per_page` items, numbered from 1."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class PageError(IndexError):
    """A page number outside 1..num_pages was asked for."""


@dataclass(frozen=True)
class Page:
    number: int
    items: list[Any]
    has_next: bool
    has_previous: bool


class Paginator:
    def __init__(self, items: Sequence[Any], per_page: int):
        if per_page < 1:
            raise ValueError(f"per_page must be at least 1, got {per_page}")
        self.items = list(items)
        self.per_page = per_page

    @property
    def num_pages(self) -> int:
        """Number of pages needed to show every item (0 for an empty sequence)."""
        return len(self.items) // self.per_page

    def page(self, number: int) -> Page:
        if not 1 <= number <= self.num_pages:
            raise PageError(f"page {number} is out of range 1..{self.num_pages}")
        start = (number - 1) * self.per_page
        return Page(
            number=number,
            items=self.items[start : start + self.per_page],
            has_next=number < self.num_pages,
            has_previous=number > 1,
        )

    def __iter__(self):
        for number in range(1, self.num_pages + 1):
            yield self.page(number)
