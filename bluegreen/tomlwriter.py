"""A small TOML writer for the configs bg writes (init, the rehearsal, the sandbox, tests).

``tomllib`` reads TOML; this writes the subset bg needs: tables, nested tables, strings,
integers, floats, booleans and lists of those. Every string is escaped, so a path with a
quote, a backslash or a newline cannot break the file or smuggle in a key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import PurePath
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _string(value: str) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _string(name)


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"TOML cannot hold {v!r} here")
        return repr(v)
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, PurePath):
        return _string(str(v))
    if isinstance(v, Sequence):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def dumps(data: Mapping[str, Any], *, comments: Mapping[str, str] | None = None) -> str:
    """TOML text for ``data``; ``comments`` maps a table path ("app", "targets.prod") to a
    comment line written above that table."""
    comments = comments or {}
    out: list[str] = []
    _table(out, (), data, comments)
    return "\n".join(out).lstrip("\n") + "\n"


def _table(out: list[str], path: tuple[str, ...], data: Mapping[str, Any],
           comments: Mapping[str, str]) -> None:
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, Mapping) and v is not None]
    tables = [(k, v) for k, v in data.items() if isinstance(v, Mapping)]
    if path and (scalars or not tables):
        dotted = ".".join(path)
        out.append("")
        if dotted in comments:
            out.extend(f"# {line}" for line in comments[dotted].splitlines())
        out.append("[" + ".".join(key(p) for p in path) + "]")
    for k, v in scalars:
        out.append(f"{key(k)} = {value(v)}")
    for k, v in tables:
        _table(out, (*path, k), v, comments)
