"""Checks for the tables users write (recipes, matrix files, the config file): an unknown key is
refused with the closest known one, once, in the same words everywhere."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from builder.errors import BuilderError


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """" (did you mean 'x'?)" for the closest of `known`, else " (known: a, b, c)"."""
    options = sorted(known)
    close = difflib.get_close_matches(word, options, n=1)
    return f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(options)})"


def check_keys(table: Mapping[str, Any], allowed: Iterable[str], where: str,
               error: type[BuilderError]) -> None:
    """Raise `error` naming the first key of `table` that is not in `allowed`."""
    known = tuple(allowed)
    for key in table:
        if key not in known:
            raise error(f"{where}: unknown key {key!r}{did_you_mean(key, known)}")
