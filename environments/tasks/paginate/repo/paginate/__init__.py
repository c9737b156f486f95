"""Split sequences into numbered pages."""

from paginate.pages import Page, PageError, Paginator

__all__ = ["Page", "PageError", "Paginator"]
