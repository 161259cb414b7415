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


def verify_config(v: Mapping[str, Any]) -> VerifyConfig:
    return VerifyConfig(window=float(v["window"]), max_error_rate=float(v["max_error_rate"]),
                        min_requests=v["min_requests"], paths=tuple(v["paths"]),
                        sticky=v["sticky"], interval=float(v["interval"]))


def verify_defaults() -> VerifyConfig:
    return verify_config({key: fld.default for key, fld in VERIFY_FIELDS.items()})
