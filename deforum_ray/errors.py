"""Turning exceptions into the one line a user reads."""

from __future__ import annotations


def first_line(error: BaseException | str, limit: int = 240) -> str:
    """The first non-empty line of an error's text (a library's 40-line message becomes one)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    text = lines[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def printable(text: str) -> str:
    """``text`` with every character that is not printable (line breaks of any kind, control and
    format characters, lone surrogates) written as its Python escape: a stranger's text shown in a
    terminal, a log line or a YAML comment stays one line and can start no syntax there."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for ch in text)
