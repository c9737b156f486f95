"""Read INI-style configuration text into nested dictionaries."""

from configlite.errors import ParseError
from configlite.parser import get_int, parse

__all__ = ["ParseError", "get_int", "parse"]
