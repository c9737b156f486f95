"""Parse `[section]` headers and `key = value` lines; '#' and ';' start comment lines."""

from __future__ import annotations

from configlite.errors import ParseError

COMMENT_PREFIXES = ("#", ";")


def parse(text: str) -> dict[str, dict[str, str]]:
    """Return {section: {key: value}}; keys before the first header belong to section ""."""
    config: dict[str, dict[str, str]] = {"": {}}
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(COMMENT_PREFIXES):
            continue
        if line.startswith("["):
            section = _section_name(line, number)
            config.setdefault(section, {})
            continue
        key, value = _key_value(line, number)
        config[section][key] = value
    return config


def get_int(config: dict[str, dict[str, str]], section: str, key: str) -> int:
    value = config[section][key]
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"[{section}] {key} = {value!r} is not an integer") from None


def _section_name(line: str, number: int) -> str:
    if not line.endswith("]"):
        raise ParseError(f"unterminated section header {line!r}", number)
    name = line[1:-1].strip()
    if not name:
        raise ParseError("empty section name", number)
    return name


def _key_value(line: str, number: int) -> tuple[str, str]:
    if "=" not in line:
        raise ParseError(f"expected 'key = value', got {line!r}", number)
    key, value = line.split("=")
    key = key.strip()
    if not key:
        raise ParseError("empty key", number)
    return key, value.strip()
