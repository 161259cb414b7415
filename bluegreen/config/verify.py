"""``[verify]``: the verification window after a deploy's switch, and a canary's judging
(defaults and checks in ``VERIFY_FIELDS`` of :mod:`bluegreen.config.schema`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bluegreen.config.schema import VERIFY_FIELDS


@dataclass(frozen=True)
class VerifyConfig:
    """The verification window after a deploy's switch (defaults: VERIFY_FIELDS)."""

    window: float
    max_error_rate: float
    min_requests: int
    paths: tuple[str, ...]
    sticky: bool
    interval: float
    access_log: str  # "" only in a Config built without a file: see log_path()

    def log_path(self, root: str) -> str:
        """Where bg's site logs the app's requests (default: under the app's root)."""
        return self.access_log or f"{root}/logs/nginx-access.log"


def verify_config(v: Mapping[str, Any]) -> VerifyConfig:
    return VerifyConfig(window=float(v["window"]), max_error_rate=float(v["max_error_rate"]),
                        min_requests=v["min_requests"], paths=tuple(v["paths"]),
                        sticky=v["sticky"], interval=float(v["interval"]),
                        access_log=v["access_log"])


def verify_defaults() -> VerifyConfig:
    return verify_config({key: fld.default for key, fld in VERIFY_FIELDS.items()})
