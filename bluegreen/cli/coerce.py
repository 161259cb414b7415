"""Cheap value conversion for plain command-line parameters.

Typer (0.29) converts every non-flag value through a pydantic ``TypeAdapter``, which imports
pydantic on the first value: about 100 ms of start-up for every command (issue 11). For
parameters of a plain type (str, int, float, bool, Path) with no constraints, a direct
conversion gives the same result; anything else keeps Typer's own conversion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer import BadParameter
from typer._coercion import RuntimeParam

PLAIN = (str, int, float, bool, Path)
# ParameterInfo fields that, when not at these defaults, ask Typer to validate the value.
_DEFAULTS = {"min": None, "max": None, "clamp": False, "exists": False, "file_okay": True,
             "dir_okay": True, "writable": False, "readable": True, "resolve_path": False,
             "allow_dash": False, "path_type": None, "parser": None, "click_type": None}


@dataclass(frozen=True)
class PlainRuntimeParam(RuntimeParam):
    def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
        kind = self.annotation
        if isinstance(kind, type) and isinstance(value, kind):
            return value
        try:
            return kind(value) if kind is not bool else _bool(value)
        except (TypeError, ValueError) as exc:
            label = getattr(kind, "__name__", repr(kind))
            raise BadParameter(f"Value {value!r} is not a valid {label}.", ctx=ctx,
                               param=param) from exc


def _bool(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on", "y", "t"):
        return True
    if text in ("0", "false", "no", "off", "n", "f"):
        return False
    raise ValueError(value)


def make_cheap(param: Any) -> None:
    """Give ``param`` the direct conversion when it is plain; otherwise leave it alone."""
    desc = getattr(param, "type_descriptor", None)
    if desc is None or not hasattr(param, "_runtime_param") or param._runtime_param is not None:
        return
    if desc.annotation not in PLAIN or desc.file_annotation is not None or desc.is_choice:
        return
    info = desc.parameter_info
    if any(getattr(info, k, v) != v for k, v in _DEFAULTS.items()):
        return
    param._runtime_param = PlainRuntimeParam(parameter_info=info, annotation=desc.annotation)
