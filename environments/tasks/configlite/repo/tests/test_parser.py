import pytest

from configlite import ParseError, get_int, parse

SAMPLE = """
# a comment
name = demo

[server]
host = example.org
port = 8080
; another comment
"""


def test_sections_and_keys():
    assert parse(SAMPLE) == {"": {"name": "demo"}, "server": {"host": "example.org", "port": "8080"}}


def test_whitespace_around_values_is_stripped():
    assert parse("[a]\n  key   =   spaced value  \n")["a"] == {"key": "spaced value"}


def test_empty_value():
    assert parse("[a]\nkey =\n")["a"] == {"key": ""}


def test_missing_equals_is_an_error():
    with pytest.raises(ParseError, match="line 2"):
        parse("[a]\njust words\n")


def test_unterminated_header_is_an_error():
    with pytest.raises(ParseError, match="unterminated"):
        parse("[a\n")


def test_get_int():
    assert get_int(parse(SAMPLE), "server", "port") == 8080
    with pytest.raises(ValueError, match="not an integer"):
        get_int(parse(SAMPLE), "server", "host")
