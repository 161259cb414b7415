"""The nginx switch: render the upstream, confirm through nginx (the stage, commit and
restore scripts: :mod:`bluegreen.facts.upstream`; the drain: :mod:`bluegreen.facts.drain`).

A switch is two-phase so that many hosts switch all-or-nothing:

* prepare: the rendered upstream replaces the live file (the old one kept byte for byte
  beside it) and ``test_command`` validates nginx's whole configuration. nginx reads its
  files only on (re)load, so a prepared file is not live yet; a failed test puts the old
  file back at once.
* commit: reload, then a probe through nginx confirms the new slot answers.
* abort (any host failed): the old file goes back and, where nginx was already reloaded,
  nginx reloads again.
"""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bluegreen import sites, upstream_builtin
from bluegreen.config import Config
from bluegreen.errors import ConfigError

# The drain lives in bluegreen.facts.drain; the executor calls these as nginx.*.
from bluegreen.facts.drain import METHOD_NONE as METHOD_NONE
from bluegreen.facts.drain import drain_script as drain_script
from bluegreen.facts.drain import invocation as invocation
from bluegreen.facts.drain import master_discovery_script as master_discovery_script
from bluegreen.facts.drain import method_name as method_name
from bluegreen.facts.drain import parse_master as parse_master
from bluegreen.facts.drain import parse_old_workers as parse_old_workers
from bluegreen.facts.drain import reload_script as reload_script

# The switch's host scripts live in bluegreen.facts.upstream; the executor calls them as nginx.*.
from bluegreen.facts.upstream import UpstreamFiles as UpstreamFiles
from bluegreen.facts.upstream import abort_script as abort_script
from bluegreen.facts.upstream import already_broken as already_broken
from bluegreen.facts.upstream import commit_script as commit_script
from bluegreen.facts.upstream import discard_backup_script as discard_backup_script
from bluegreen.facts.upstream import discard_staged_script as discard_staged_script
from bluegreen.facts.upstream import files as files
from bluegreen.facts.upstream import parse_layout as parse_layout
from bluegreen.facts.upstream import raise_if_rejected as raise_if_rejected
from bluegreen.facts.upstream import read_layout as read_layout
from bluegreen.facts.upstream import site_refusal as site_refusal
from bluegreen.facts.upstream import stage_script as stage_script
from bluegreen.nginxconf import nginx_ident as nginx_ident
from bluegreen.probe import Answer, ProbeError, Prober
from bluegreen.resources import resource_dir
from bluegreen.state import now_iso

if TYPE_CHECKING:  # imported where used: `bg --version` and `bg status` need neither
    import jinja2


SLOT_HEADER = "X-BG-Slot"


def _template(config: Config) -> jinja2.Template:
    if config.nginx.template is not None:
        return _load_template(str(config.nginx.template.parent), config.nginx.template.name)
    return _load_template(str(resource_dir("templates")), "upstream.conf.j2")


# The hosts of a fleet render at once: without it, each thread that misses jinja's cache
# compiles the template again (8 compiles for 16 hosts, ~10 ms of CPU each).
_TEMPLATE_LOCK = threading.Lock()


def _load_template(directory: str, name: str) -> jinja2.Template:
    import jinja2

    try:
        with _TEMPLATE_LOCK:
            return _environment(directory).get_template(name)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"nginx template {name}: {exc}") from exc


@functools.lru_cache(maxsize=8)
def _environment(directory: str) -> jinja2.Environment:
    """One per template directory and process: a deploy renders per host and per phase,
    and the environment keeps each compiled template (reloaded when the file changes)."""
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


@dataclass(frozen=True)
class Server:
    """One ``server`` line of the upstream: an app host's live slot as nginx reaches it."""

    address: str
    port: int
    host: str  # the app host it belongs to ("" for this machine's own slot)
    weight: int = 0  # a canary's share (0: nginx's default)

    def to_template(self) -> dict[str, str | int]:
        # An IPv6 literal needs brackets before the port.
        address = f"[{self.address}]" if ":" in self.address else self.address
        return {"address": address, "port": self.port, "host": self.host,
                "weight": self.weight}


def renderer_modules(config: Config) -> tuple[str, ...]:
    """What rendering the upstream file imports (for ``prefetch``): Jinja2 only for a
    user's ``[nginx] template``."""
    return () if config.nginx.template is None else ("jinja2",)


def render_upstream(config: Config, *, slot: str, version: str,
                    servers: Sequence[Server] | None = None,
                    canary: Mapping[str, object] | None = None) -> str:
    """The upstream file sending traffic to ``slot``; raises ConfigError on a broken template.

    ``servers`` lists every app host's live slot when nginx runs on a load-balancer tier
    (``slot`` is then the slot they share, or ``mixed``); without it the one server is this
    host's own slot on 127.0.0.1, so the template has one shape for both topologies.
    It also defines bg's probe server on ``[nginx] probe_port`` (loopback only), which
    proxies to the live upstream and names the app, the slot and the upstream address
    that answered: :func:`confirm` needs nothing from the user's own site.
    """
    port = config.slots.get(slot, 0)
    if servers is None:
        servers = [Server("127.0.0.1", port, "")]
    values: dict[str, Any] = dict(
        app=config.app.name,
        ident=nginx_ident(config.app.name),
        slot=slot,
        port=port,
        version=version,
        slots=dict(config.slots),
        servers=[s.to_template() for s in servers],
        time=now_iso(),
        probe_port=config.nginx.probe_port,
        probe_address=generation_address(slot),
        canary=canary,
    )
    if config.nginx.template is None:  # the built-in template: the same bytes, no Jinja2
        return upstream_builtin.render(**values)
    import jinja2

    try:
        text = _template(config).render(**values)
    except jinja2.TemplateError as exc:
        where = config.nginx.template or "templates/upstream.conf.j2"
        raise ConfigError(f"nginx template {where} failed to render: {exc}") from exc
    if "\x00" in text:
        raise ConfigError("nginx template rendered a NUL byte")
    return text


def parse_nginx_version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else None


APP_HEADER = "X-BG-App"
UPSTREAM_HEADER = "X-BG-Upstream"


# The probe server also listens on a loopback address of its own per slot label. nginx's
# master starts the new workers on a reload, then waits 100 ms before telling the old ones
# to stop accepting: for those 100 ms a connection to a port both generations listen on
# may still reach an old worker. An address only the new configuration listens on reaches
# only new workers, so the switch is confirmed as soon as they run.
_GENERATION_ADDRESSES = {"blue": "127.0.0.2", "green": "127.0.0.3"}


def generation_address(slot: str) -> str:
    return _GENERATION_ADDRESSES.get(slot, "127.0.0.4")


def generation_url(config: Config, slot: str) -> str:
    return (f"http://{generation_address(slot)}:{config.nginx.probe_port}"
            + config.health.path)


def probe_urls(config: Config) -> tuple[str, ...]:
    """Where a switch is confirmed: bg's probe server, and the user's ``probe_url`` when set."""
    own = config.nginx.probe_server_url + config.health.path
    return (own, config.nginx.probe_url) if config.nginx.probe_url else (own,)


@dataclass(frozen=True)
class Confirmation:
    ok: bool
    attempts: int
    elapsed: float
    detail: str


def confirm(host: Prober, config: Config, slot: str, *, timeout: float = 10.0,
            layout: list[sites.Block] | None = None) -> Confirmation:
    """Probe through nginx until every URL of :func:`probe_urls` answers from ``slot``.

    bg's probe server must also name this app (another app's probe server on the same
    port would otherwise confirm for us) and the slot's port as the upstream that answered.
    A reload is asynchronous: the first probes may still reach an old worker, so probes
    repeat, 5 ms apart at first, then 50 ms. The probe server is asked at ``slot``'s own
    address first (:func:`generation_address`: only the new workers listen there), then
    at its usual one (a template without the per-slot ``listen``, or nginx still starting
    the new workers). ``layout``, the server blocks of nginx's configuration when the
    stage read them, tells which block answers ``probe_url`` when its answer is unlabelled.
    """
    started = time.monotonic()
    attempts = 0
    detail = "no answer"
    own, *others = probe_urls(config)
    fresh = generation_url(config, slot)
    port = config.slots.get(slot)  # None for "mixed" (a load-balancer tier in transition)
    pending = [own, *others]
    while True:
        attempts += 1
        try:
            while pending:
                url = pending[0]
                if url == own:
                    try:
                        r = host.http_probe(fresh, timeout=2.0)
                        url = fresh
                    except ProbeError:
                        r = host.http_probe(own, timeout=2.0)
                else:
                    r = host.http_probe(url, timeout=2.0)
                problem = _judge(r, url, slot, port, config.app.name, ours=url in (own, fresh),
                                 layout=layout)
                if problem:
                    detail = problem
                    break
                pending.pop(0)
            if not pending:
                return Confirmation(True, attempts, time.monotonic() - started, "")
        except ProbeError as exc:
            detail = f"{pending[0]}: {exc}"
            if pending[0] == own:
                detail += (f" (is bg's probe server on 127.0.0.1:{config.nginx.probe_port}"
                           " loaded? `bg check` tells)")
        if time.monotonic() - started >= timeout:
            return Confirmation(False, attempts, time.monotonic() - started, detail)
        time.sleep(0.005 if attempts < 20 else 0.05)


def _judge(r: Answer, url: str, slot: str, port: int | None, app: str, *, ours: bool,
           layout: list[sites.Block] | None = None) -> str:
    """What is wrong with one probe's answer ("" when it came from ``slot``)."""
    got = r.header(SLOT_HEADER)
    if ours and r.header(APP_HEADER) != app:
        return (f"{url}: answered for app {r.header(APP_HEADER)!r}, not {app!r}: give each"
                " app on this nginx its own [nginx] probe_port")
    if got is None:
        why = sites.missing_header_hint(layout, nginx_ident(app), url)
        return f"{url}: HTTP {r.status} without an {SLOT_HEADER} header: {why}"
    if got != slot:
        return f"{url}: HTTP {r.status} from slot {got!r}, expected {slot!r}"
    if r.status >= 500:
        return f"{url}: HTTP {r.status} from slot {slot!r}"
    upstream = r.header(UPSTREAM_HEADER)
    if ours and port is not None and upstream is not None \
            and not upstream.rstrip().endswith(f":{port}"):
        return f"{url}: answered by upstream {upstream}, expected port {port}"
    return ""
