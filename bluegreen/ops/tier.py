"""Where nginx runs for a target: one object, chosen once from the config.

Either nginx runs on every app host (:class:`Colocated`, each host's own upstream lists
its own live slot), or on a tier of load balancers in front of them
(:class:`~bluegreen.ops.lbtier.LoadBalancers`, every LB's upstream lists every app host's
live slot). The session, the steps, the switch, the canary, the plan and the verification
window call the tier and never ask which one it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from bluegreen import asroot, nginx
from bluegreen.facts.observe import Observation
from bluegreen.host import CommandResult, Host
from bluegreen.runners import BIND_LOOPBACK

if TYPE_CHECKING:
    from bluegreen.config import Config, TargetConfig
    from bluegreen.ops.core import Context
    from bluegreen.ops.plan import Plan, Switch
    from bluegreen.ops.progress import Progress
    from bluegreen.ops.session import Session

Rendered = dict[str, tuple[str, str]]  # nginx host -> (its upstream, X-BG-Slot a probe shows)


class NginxTier(Protocol):
    """What differs between nginx on the app hosts and nginx on load balancers."""

    # The address a slot binds: loopback when nginx is on its host, every address otherwise.
    bind: str
    # Connections to nginx hosts that are not app hosts: locked, journaled and closed with
    # the app hosts; always every one, whatever ``--hosts`` selects.
    hosts: list[Host]

    @property
    def names(self) -> tuple[str, ...]:
        """``hosts``' names, as plan steps list them."""

    def nginx_names(self, app_hosts: Sequence[str]) -> tuple[str, ...]:
        """The nginx hosts that serve ``app_hosts``."""

    def nginx_hosts(self, app_hosts: Sequence[Host]) -> list[Host]:
        """The nginx hosts that serve ``app_hosts``."""

    def served_by(self, ctx: Context, nginx_host: str) -> tuple[str, ...]:
        """The app hosts whose traffic nginx on ``nginx_host`` carries."""

    def app_nginx_test(self, ctx: Context) -> str | None:
        """The command testing nginx's configuration on an app host (None: none runs there)."""

    def lock_tail(self, ctx: Context, marker: str, *, nginx_test: bool) -> str:
        """Script after the lock on one of ``hosts``: what it observes."""

    def observe(self, ctx: Context) -> dict[str, Observation]:
        """Read-only: each of ``hosts``' upstream files (for dry runs and status)."""

    def served(self, ctx: Context, nginx_seen: Mapping[str, Observation],
               app_seen: Mapping[str, Observation]) -> dict[str, Observation]:
        """Each app host's observation with the upstream that nginx really serves it by."""

    def stage_with_start(self, ctx: Context, slot: str, version: str) -> str:
        """Script staging and testing the new upstream in the round trip that starts
        ``slot`` on an app host (phase one of the switch), or nothing."""

    def staged_with_start(self, ctx: Context, host: Host, result: CommandResult,
                          progress: Progress) -> None:
        """After that round trip: note what it staged (raises when nginx's choice of
        server block would not reach the app)."""

    def render(self, ctx: Context, step: Switch, observed: Mapping[str, Observation]
               ) -> Rendered:
        """The upstream each nginx host gets for ``step`` (not a canary)."""

    def canary_servers(self, ctx: Context, step: Switch, observed: Mapping[str, Observation],
                       pair: _Pair) -> dict[str, list[nginx.Server]]:
        """nginx host -> the servers its canary upstream lists (``pair``: a switching app
        host's new and old slot at an address)."""

    def check_canary(self, slots: set[str]) -> None:
        """Refuse a canary whose hosts are live on ``slots`` when that cannot work."""

    def before_stage(self, ctx: Context, step: Switch, nginx_hosts: Sequence[Host]) -> None:
        """What must hold on every nginx host before anything is staged."""

    def drain(self, ctx: Context, session: Session, old_workers: Mapping[str, list[int]],
              *, wait: bool = True) -> list[str]:
        """Before the app hosts stop a slot nginx used: nginx's old workers on ``hosts``
        gone (or, without ``wait``, no longer accepting). Notes."""

    @property
    def app_drain(self) -> tuple[str, ...]:
        """How the app hosts' finish step names the drain it does itself (or nothing)."""

    def addresses(self, ctx: Context, nginx_host: str, slots: Mapping[str, str]
                  ) -> list[str]:
        """How nginx on ``nginx_host`` names the given slots (app host -> slot) in
        ``$upstream_addr``."""

    def preview(self, ctx: Context, plan: Plan, step: Switch | None,
                observed: Mapping[str, Observation]) -> dict[str, tuple[str, str]]:
        """Dry run: nginx host -> (its upstream now, the one the plan gives it)."""

    def close(self) -> None: ...


class _Pair(Protocol):
    def __call__(self, address: str, host: str, app: str) -> list[nginx.Server]: ...


class Colocated:
    """nginx on every app host, its upstream naming that host's own live slot."""

    bind = BIND_LOOPBACK

    def __init__(self) -> None:
        self.hosts: list[Host] = []

    @property
    def names(self) -> tuple[str, ...]:
        return ()

    def nginx_names(self, app_hosts: Sequence[str]) -> tuple[str, ...]:
        return tuple(app_hosts)

    def nginx_hosts(self, app_hosts: Sequence[Host]) -> list[Host]:
        return list(app_hosts)

    def served_by(self, ctx: Context, nginx_host: str) -> tuple[str, ...]:
        return (nginx_host,)

    def app_nginx_test(self, ctx: Context) -> str | None:
        return asroot.command(ctx.config.nginx.test_command)

    def lock_tail(self, ctx: Context, marker: str, *, nginx_test: bool) -> str:
        return ""

    def observe(self, ctx: Context) -> dict[str, Observation]:
        return {}

    def served(self, ctx: Context, nginx_seen: Mapping[str, Observation],
               app_seen: Mapping[str, Observation]) -> dict[str, Observation]:
        return dict(app_seen)

    def stage_with_start(self, ctx: Context, slot: str, version: str) -> str:
        content = nginx.render_upstream(ctx.config, slot=slot, version=version)
        return nginx.stage_script(ctx.config, content)

    def staged_with_start(self, ctx: Context, host: Host, result: CommandResult,
                          progress: Progress) -> None:
        progress.staged.add(host.name)
        # before the health gate: a refused layout stops the slot at once
        progress.layouts[host.name] = nginx.read_layout(result.stdout, host.name, ctx.config)

    def render(self, ctx: Context, step: Switch, observed: Mapping[str, Observation]
               ) -> Rendered:
        return {h: (nginx.render_upstream(ctx.config, slot=slot, version=step.versions[h]),
                    slot) for h, slot in step.slots.items()}

    def canary_servers(self, ctx: Context, step: Switch, observed: Mapping[str, Observation],
                       pair: _Pair) -> dict[str, list[nginx.Server]]:
        return {host: pair("127.0.0.1", "", host) for host in step.slots}

    def check_canary(self, slots: set[str]) -> None:
        pass  # each host's upstream is its own

    def before_stage(self, ctx: Context, step: Switch, nginx_hosts: Sequence[Host]) -> None:
        pass  # nginx reaches its own host's slots on loopback

    def drain(self, ctx: Context, session: Session, old_workers: Mapping[str, list[int]],
              *, wait: bool = True) -> list[str]:
        return []  # each app host drains its own nginx, in its own script

    @property
    def app_drain(self) -> tuple[str, ...]:
        return ("drain nginx workers",)

    def addresses(self, ctx: Context, nginx_host: str, slots: Mapping[str, str]
                  ) -> list[str]:
        return ([f"127.0.0.1:{ctx.config.slots[slots[nginx_host]]}"]
                if nginx_host in slots else [])

    def preview(self, ctx: Context, plan: Plan, step: Switch | None,
                observed: Mapping[str, Observation]) -> dict[str, tuple[str, str]]:
        return {h.host: (observed[h.host].upstream or "",
                         nginx.render_upstream(ctx.config, slot=h.slot, version=h.version))
                for h in plan.acting}

    def close(self) -> None:
        pass


def open_tier(config: Config, target: TargetConfig, *, accept_new_host_keys: bool = False
              ) -> NginxTier:
    """The target's tier, its load balancers connected (none when nginx runs on the app
    hosts)."""
    if not target.lbs:  # the common case: no load-balancer code to import
        return Colocated()
    from bluegreen.ops.lbtier import LoadBalancers, open_lbs

    return LoadBalancers(open_lbs(config, target, accept_new_host_keys=accept_new_host_keys))
