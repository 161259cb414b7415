"""The global options of one invocation, merged once into a frozen object (Typer-free:
the operation commands' fast path, :mod:`bluegreen.cli.quick`, builds it without Typer)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Python names of the root callback's parameters that are global options.
GLOBAL_NAMES = ("config", "target", "verbose", "json_out", "quiet", "accept_new_host_keys")


@dataclass(frozen=True)
class GlobalOptions:
    config: Path | None = None
    target: str | None = None
    verbose: int = 0
    json: bool = False
    quiet: bool = False
    accept_new_host_keys: bool = False
    command: str = ""  # "deploy", "lock status": names the JSON envelope
    no_color: bool = False

    @classmethod
    def merge(cls, before: Mapping[str, Any], after: Mapping[str, Any], *, command: str,
              environ: Mapping[str, str] | None = None) -> GlobalOptions:
        """Options after the command win for values; flags and -v counts add up."""
        env = os.environ if environ is None else environ

        def value(name: str) -> Any:
            later = after.get(name)
            return later if later is not None else before.get(name)

        return cls(
            config=value("config"),
            target=value("target"),
            verbose=int(before.get("verbose") or 0) + int(after.get("verbose") or 0),
            json=bool(before.get("json_out") or after.get("json_out")),
            quiet=bool(before.get("quiet") or after.get("quiet")),
            accept_new_host_keys=bool(before.get("accept_new_host_keys")
                                      or after.get("accept_new_host_keys")),
            command=command,
            # https://no-color.org: any non-empty value.
            no_color=bool(env.get("NO_COLOR")),
        )
