"""The plan steps that watch real traffic after a switch: a deploy's verification window
and a held canary (see :mod:`bluegreen.ops.plan` for the others)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bluegreen.config import Config


def _names(hosts: tuple[str, ...]) -> str:
    return ", ".join(hosts) if len(hosts) <= 4 else f"{len(hosts)} hosts"


@dataclass(frozen=True)
class CanarySpec:
    """A switch that sends ``percent`` of new requests to the new slots and the rest to
    ``old`` (host -> slot serving now); ``sticky``: per client address."""

    percent: int
    old: Mapping[str, str]
    old_versions: Mapping[str, str]
    sticky: bool = False
    since: float = 0.0  # unix time the canary started (nginx's $msec in the log)


@dataclass(frozen=True)
class Verify:
    """The verification window: nginx's record of the new slots' real requests (and probes
    through nginx) for ``window`` seconds, old slots kept warm; too many failures switch
    back. ``old``: host -> slot traffic returns to."""

    window: float
    slots: Mapping[str, str]
    old: Mapping[str, str]
    front: tuple[str, ...] = ()  # the load balancers nginx runs on (empty: the app hosts)
    canary: bool = False  # judge only the requests the new slots served (a canary)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def describe(self, config: Config) -> str:
        v = config.verify
        where = f" on {_names(self.front)}" if self.front else ""
        paths = ", ".join(v.paths or (config.health.path,))
        return (f"verify for {self.window:g}s: nginx's log{where} of the new slots' requests"
                f" (switch back above {v.max_error_rate:.2%} failed of >= {v.min_requests}),"
                f" probes {paths}; old slots kept warm")


@dataclass(frozen=True)
class Hold:
    """A canary runs: its switch is made permanent (nginx's backup file dropped), then its
    own requests are judged for ``watch`` seconds; a verdict sends all traffic back."""

    slots: Mapping[str, str]
    watch: float
    promote: bool  # the steps after this one promote the canary when the watch passed
    front: tuple[str, ...] = ()  # the load balancers nginx runs on (empty: the app hosts)

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(self.slots)

    def describe(self, config: Config) -> str:
        then = ("promote (full switch, retire)" if self.promote
                else "leave it running for `bg promote` or `bg abort`")
        watch = (f"judge the canary's requests for {self.watch:g}s (switch back above"
                 f" {config.verify.max_error_rate:.2%}); " if self.watch else "")
        return f"record the canary; {watch}{then}"
