"""The load-balancer tier: nginx runs on the target's ``lbs``, the slots on its app hosts.

Every LB gets the same upstream file: one ``server <address>:<port>;`` per app host, its
live slot (the address from ``TargetConfig.address_of``). The LBs' upstream files are
also the truth about which slot each app host serves (as an app host's own upstream file
is without an LB tier): operations read them under the lock and reconcile each app host's
recorded state with them. Hosts outside ``--hosts`` keep the server line the LBs have.

The switch is the same two-phase switch, run on the LBs: before staging, every LB must
reach each new slot over the network (an app that ignores ``BG_BIND`` and listens on
loopback only is caught here, not by users); then stage + test on every LB, reload and
confirm through each; any failure restores every LB. Drain waits for every LB's old
workers before the app hosts retire their old slots.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from bluegreen import asroot, nginx
from bluegreen.errors import ConfigError, SwitchError
from bluegreen.facts.drain import drain_noted_script, read_drain
from bluegreen.facts.observe import Observation, new_marker, observe_script, parse_observation
from bluegreen.host import CommandResult, Host, check
from bluegreen.probe import ProbeError
from bluegreen.runners import BIND_ALL
from bluegreen.shell import lines

if TYPE_CHECKING:
    from bluegreen.config import Config, TargetConfig
    from bluegreen.ops.core import Context
    from bluegreen.ops.plan import Plan, Switch
    from bluegreen.ops.progress import Progress
    from bluegreen.ops.session import Session
    from bluegreen.ops.tier import Rendered, _Pair

MIXED = "mixed"  # the X-BG-Slot label of an upstream whose app hosts serve different slots
_SERVER = re.compile(r"(?:^|[{;])\s*server\s+(\[[^\]]+\]|[^\s:;\[]+):(\d+)\b", re.M)


def observation_script(ctx: Context, marker: str, *, nginx_test: bool = False) -> str:
    """Read-only, on an LB: its live upstream file and a backup an interrupted switch left
    (``nginx_test``: and whether nginx's configuration passes its test as it is)."""
    files = nginx.files(ctx.config)
    return observe_script(ctx.paths, marker, upstream_file=files.live,
                          backup_file=files.backup, alive_scripts={},
                          nginx_test=(asroot.command(ctx.config.nginx.test_command)
                                      if nginx_test else None))


def observe(ctx: Context, lbs: Sequence[Host]) -> dict[str, Observation]:
    """Each LB's upstream files, read-only (dry runs and status)."""
    def one(host: Host) -> Observation:
        marker = new_marker()
        result = check(host.run(observation_script(ctx, marker)), "reading nginx's upstream",
                       host)
        return parse_observation(result.stdout, marker)

    return ctx.each(one, "reading the load balancers", lbs)


def parse_servers(upstream: str | None) -> dict[str, int]:
    """address -> port of each ``server`` line (IPv6 brackets dropped)."""
    return {addr.strip("[]"): int(port) for addr, port in _SERVER.findall(upstream or "")}


def served_ports(ctx: Context, observed: Mapping[str, Observation]) -> dict[str, int]:
    """app host -> the port every LB that lists it sends it traffic to (after undoing an
    interrupted switch, so a backup file counts over the live one). A host the LBs
    disagree about, or none lists, is left out."""
    views = [parse_servers(o.backup if o.backup is not None else o.upstream)
             for name, o in observed.items() if name in ctx.target.lbs]
    out: dict[str, int] = {}
    for spec in ctx.target.hosts:
        addr = ctx.target.address_of(spec)
        ports = {v[addr] for v in views if addr in v}
        if len(ports) == 1:
            out[spec] = ports.pop()
    return out


def served_upstreams(ctx: Context, observed: Mapping[str, Observation]) -> dict[str, str]:
    """Per app host, an upstream text naming the port the LBs serve it on: what
    ``reconcile`` reads from the host's own upstream file without an LB tier."""
    return {spec: f"server {ctx.target.address_of(spec)}:{port};"
            for spec, port in served_ports(ctx, observed).items()}


def servers(ctx: Context, fleet: Mapping[str, str], observed: Mapping[str, Observation]
            ) -> list[nginx.Server]:
    """Every app host's live slot after the switch, in target order: the planned hosts'
    from ``fleet``, the others' as the LBs list them now (a host never deployed: none)."""
    current = served_ports(ctx, observed)
    out = []
    for spec in ctx.target.hosts:
        port = ctx.config.slots[fleet[spec]] if spec in fleet else current.get(spec)
        if port is not None:
            out.append(nginx.Server(ctx.target.address_of(spec), port, spec))
    return out


def label(ctx: Context, listed: Sequence[nginx.Server]) -> str:
    """The slot every listed server runs, or ``mixed``."""
    slots = {slot for slot, port in ctx.config.slots.items()
             for s in listed if s.port == port}
    return slots.pop() if len(slots) == 1 else MIXED


def render(ctx: Context, fleet: Mapping[str, str], versions: Mapping[str, str],
           observed: Mapping[str, Observation]) -> tuple[str, str]:
    """The upstream every LB gets, and the X-BG-Slot label a probe through it must show."""
    listed = servers(ctx, fleet, observed)
    slot = label(ctx, listed)
    version = set(versions.values())
    content = nginx.render_upstream(ctx.config, slot=slot,
                                    version=version.pop() if len(version) == 1 else MIXED,
                                    servers=listed)
    return content, slot


def check_reach(ctx: Context, slots: Mapping[str, str], lbs: Sequence[Host]) -> None:
    """Every LB reaches each new slot's health endpoint at the address it will proxy to."""
    cfg = ctx.config.health

    def one(lb: Host) -> None:
        for spec, slot in slots.items():
            addr = ctx.target.address_of(spec)
            host = f"[{addr}]" if ":" in addr else addr
            url = f"http://{host}:{ctx.config.slots[slot]}{cfg.path}"
            try:
                status = lb.http_probe(url, timeout=cfg.timeout).status
                why = "" if status == cfg.expect else f"HTTP {status}"
            except ProbeError as exc:
                why = str(exc)
            if why:
                raise SwitchError(
                    f"{lb.name}: load balancer cannot reach {spec}'s {slot} at {url}"
                    f" ({why}); nothing was switched",
                    hint="the app must listen on the address in $BG_BIND (0.0.0.0 behind"
                    " load balancers), and the LBs must reach the app hosts' ports;"
                    " [targets.<name>.addresses] sets the address they use",
                )

    with ctx.step(f"load balancers reach the new slots ({len(slots)} app host(s))"):
        ctx.each(one, "reach check", lbs)


def drain(ctx: Context, lbs: Sequence[Host], run: Callable[[Host, str], CommandResult],
          old_workers: Mapping[str, list[int]], *, wait: bool = True) -> list[str]:
    """After the switch is recorded: every LB drops its backup upstream file and, with
    ``wait`` (an old slot is about to stop), waits for its old workers (or the drain
    timeout). ``run`` is the session's (it carries the journal). Notes."""
    timeout = ctx.config.switch.drain_timeout

    def one(host: Host) -> str:
        script = drain_script(ctx, old_workers.get(host.name, []), accepting_only=not wait)
        return check(run(host, script), "draining nginx", host).stdout

    title = "drain nginx workers on" if wait else "old nginx workers stop accepting on"
    with ctx.step(f"{title} {len(lbs)} load balancer(s)") as note:
        outputs = ctx.each(one, "drain", lbs)
        if any(read_drain(out).timed_out for out in outputs.values()):
            note.append(f"drain timed out after {timeout:g}s on some")
            return [f"nginx's old workers outlived drain_timeout ({timeout:g}s)"]
    return []


def drain_script(ctx: Context, pids: list[int], *, accepting_only: bool = False) -> str:
    """On an LB after the switch is recorded: drop its backup file, wait for old workers
    (to exit, or with ``accepting_only`` to stop taking new connections)."""
    return lines(
        nginx.discard_backup_script(ctx.config),
        drain_noted_script(pids, ctx.config.switch.drain_timeout,
                           accepting_only=accepting_only),
    )


def open_lbs(config: Config, target: TargetConfig, *, accept_new_host_keys: bool = False
             ) -> list[Host]:
    """Connections to the target's load balancers (none when nginx runs on the app hosts)."""
    both = sorted(set(target.lbs) & set(target.hosts))
    if both:
        raise ConfigError(
            f"{config.path}: {both[0]} is both an app host and a load balancer of target"
            f" {target.name!r}",
            hint="with `lbs`, nginx runs on the load balancers only: list each host once",
        )
    if not target.lbs:
        return []
    from bluegreen.ssh import SshHost

    accept = accept_new_host_keys or target.host_key_policy == "accept-new"
    return [
        SshHost(
            spec,
            identity_file=target.identity_file,
            known_hosts=target.known_hosts,
            host_key_policy="accept-new" if accept else "strict",
            connect_timeout=target.connect_timeout,
        )
        for spec in target.lbs
    ]


class LoadBalancers:
    """nginx on the target's ``lbs`` only (see the module's docstring); the
    :class:`~bluegreen.ops.tier.NginxTier` the session, steps and switch call."""

    bind = BIND_ALL  # a slot must be reachable from the LBs, not only on loopback

    def __init__(self, lbs: list[Host]) -> None:
        self.hosts = lbs

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    def nginx_names(self, app_hosts: Sequence[str]) -> tuple[str, ...]:
        return self.names

    def nginx_hosts(self, app_hosts: Sequence[Host]) -> list[Host]:
        return list(self.hosts)  # each one's upstream covers every app host

    def served_by(self, ctx: Context, nginx_host: str) -> tuple[str, ...]:
        return ctx.target.hosts

    def app_nginx_test(self, ctx: Context) -> str | None:
        return None  # an app host's files are not nginx's

    def lock_tail(self, ctx: Context, marker: str, *, nginx_test: bool) -> str:
        return lines(nginx.discard_staged_script(ctx.config),
                     observation_script(ctx, marker, nginx_test=nginx_test))

    def observe(self, ctx: Context) -> dict[str, Observation]:
        return observe(ctx, self.hosts)

    def served(self, ctx: Context, nginx_seen: Mapping[str, Observation],
               app_seen: Mapping[str, Observation]) -> dict[str, Observation]:
        served = served_upstreams(ctx, nginx_seen)
        return {n: replace(obs, upstream=served.get(n), backup=None)
                for n, obs in app_seen.items()}

    def stage_with_start(self, ctx: Context, slot: str, version: str) -> str:
        return ""  # staging is on the LBs only, in the switch

    def staged_with_start(self, ctx: Context, host: Host, result: CommandResult,
                          progress: Progress) -> None:
        pass

    def render(self, ctx: Context, step: Switch, observed: Mapping[str, Observation]
               ) -> Rendered:
        return dict.fromkeys(self.names, render(ctx, step.fleet, step.versions, observed))

    def canary_servers(self, ctx: Context, step: Switch, observed: Mapping[str, Observation],
                       pair: _Pair) -> dict[str, list[nginx.Server]]:
        current = served_ports(ctx, observed)
        listed: list[nginx.Server] = []
        for spec in ctx.target.hosts:
            addr = ctx.target.address_of(spec)
            if spec in step.slots:
                listed += pair(addr, spec, spec)
            elif spec in current:
                listed.append(nginx.Server(addr, current[spec], spec))
        return dict.fromkeys(self.names, listed)

    def check_canary(self, slots: set[str]) -> None:
        from bluegreen.errors import StateError

        if len(slots) > 1:  # one upstream for the fleet: one old slot and one new
            raise StateError("the hosts are live on different slots: converge them first",
                             hint="`bg deploy VERSION` without --canary")

    def before_stage(self, ctx: Context, step: Switch, nginx_hosts: Sequence[Host]) -> None:
        check_reach(ctx, step.slots, nginx_hosts)

    def drain(self, ctx: Context, session: Session, old_workers: Mapping[str, list[int]],
              *, wait: bool = True) -> list[str]:
        return drain(ctx, session.hosts(self.names), session.run, old_workers, wait=wait)

    @property
    def app_drain(self) -> tuple[str, ...]:
        return ()  # the LBs drained first, in a step of their own

    def addresses(self, ctx: Context, nginx_host: str, slots: Mapping[str, str]
                  ) -> list[str]:
        out = []
        for app_host, slot in slots.items():
            server = nginx.Server(ctx.target.address_of(app_host), ctx.config.slots[slot],
                                  app_host)
            out.append(f"{server.to_template()['address']}:{server.port}")
        return out

    def preview(self, ctx: Context, plan: Plan, step: Switch | None,
                observed: Mapping[str, Observation]) -> dict[str, tuple[str, str]]:
        if step is None:
            return {}
        seen = self.observe(ctx)
        new, _ = render(ctx, step.fleet, step.versions, seen)
        return {lb: (obs.upstream or "", new) for lb, obs in seen.items()}

    def close(self) -> None:
        for h in self.hosts:
            h.close()
