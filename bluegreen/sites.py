"""Which nginx server block answers a request, read from ``nginx -T``: is the app's site
shadowed by another (Debian's ``sites-enabled/default`` is ``default_server`` on port 80)?

nginx picks the server for a request in two steps (https://nginx.org/en/docs/http/
request_processing.html): the listen socket (a block listening on the exact address wins
over one on ``*``), then among the blocks on that socket the one whose ``server_name``
matches the Host header (exact, then the longest ``*.`` wildcard, then ``.*``, then the
first regex), else the socket's default: the block marked ``default_server``, else the
first one in configuration order. :func:`bluegreen.nginxconf.parse` rebuilds that order (each
included file is read where its ``include`` stands) and :func:`judge` applies the rules to
the blocks that ``proxy_pass`` to the app's upstream.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

# The dump's reader: callers use these as sites.* (re-exported).
from bluegreen.nginxconf import DUMP_FILTER as DUMP_FILTER
from bluegreen.nginxconf import SLOT_HEADER
from bluegreen.nginxconf import Block as Block
from bluegreen.nginxconf import Listen as Listen
from bluegreen.nginxconf import file_texts as file_texts
from bluegreen.nginxconf import parse as parse

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"


def _on(block: Block, address: str, port: int) -> Listen | None:
    listens = block.listens or [Listen("*", 80, False)]  # nginx's default listen
    return next((li for li in listens if li.address == address and li.port == port), None)


def _group(blocks: list[Block], address: str, port: int) -> tuple[list[Block], str]:
    """The blocks a connection to ``address:port`` chooses among, and the socket's address."""
    exact = [b for b in blocks if _on(b, address, port)]
    if exact or address in ("*", "[::]"):
        return exact, address
    wildcard = "[::]" if address.startswith("[") else "*"
    return [b for b in blocks if _on(b, wildcard, port)], wildcard


def default_of(group: list[Block], address: str, port: int) -> Block:
    marked = [b for b in group if (li := _on(b, address, port)) is not None and li.default]
    return marked[0] if marked else group[0]


def _matches(pattern: str, host: str) -> int:
    """How well ``pattern`` (a server_name) matches ``host``: 4 exact, 3 ``*.x``/``.x``
    (plus its length, as nginx prefers the longest), 2 ``x.*``, 1 regex, 0 not at all."""
    if pattern.startswith("~"):
        try:
            return 1 if re.search(pattern[1:], host) else 0
        except re.error:
            return 0
    if pattern == host or (pattern.startswith(".") and host == pattern[1:]):
        return 4 << 16
    if pattern.startswith(("*.", ".")):
        suffix = pattern[pattern.index("."):]
        return (3 << 16) + len(suffix) if host.endswith(suffix) else 0
    if pattern.endswith(".*"):
        return 2 << 16 if host.startswith(pattern[:-1]) else 0
    return 0


def winner(blocks: list[Block], address: str, port: int, host: str) -> Block | None:
    """The server block nginx picks for a request to ``address:port`` with ``Host: host``."""
    group, socket_address = _group(blocks, address, port)
    if not group:
        return None
    best, score = None, 0
    for b in group:
        s = max((_matches(n, host.lower().rstrip(".")) for n in b.names), default=0)
        if s > score:  # on a tie the first block wins, as in nginx
            best, score = b, s
    return best if best is not None else default_of(group, socket_address, port)


def _sample(name: str) -> str | None:
    """A host ``name`` (a server_name) matches, to ask :func:`winner` about; None for a
    regex (taken as answered: its matches cannot be listed)."""
    if name.startswith("~"):
        return None
    if name.startswith("*."):
        return "bg-check" + name[1:]
    if name.endswith(".*"):
        return name[:-1] + "bg-check"
    return name.removeprefix(".")


def placeholder(name: str) -> bool:
    """A name no request carries (``_``, ``""``): the block answers only as a default."""
    return not re.search(r"[a-z0-9]", name)


@dataclass(frozen=True)
class Verdict:
    status: str
    detail: str
    hint: str = ""
    blocking: bool = False  # a deploy refuses: no request would reach the app


def ours(blocks: list[Block], ident: str) -> list[Block]:
    target = f"http://{ident}_live"
    return [b for b in blocks if not b.bg_probe and any(
        p == target or p.startswith(target + "/") for p in b.proxies)]


def _why_default(block: Block, listen: Listen, group: list[Block]) -> str:
    li = _on(block, listen.address, listen.port)
    how = "default_server" if li is not None and li.default else "listed first"
    return f"{block.where} (listen {listen.address}:{listen.port}, {how})"


def judge(blocks: list[Block], ident: str, probe_url: str = "") -> Verdict:
    """Does any request reach the app's site (the blocks proxying to ``<ident>_live``)?"""
    mine = ours(blocks, ident)
    if not mine:
        return Verdict(WARN, f"no server block proxies to http://{ident}_live",
                       "include the site `bg init` wrote (bluegreen-site.conf), e.g. in"
                       " /etc/nginx/sites-enabled/")
    served: list[str] = []
    shadows: list[str] = []
    by: list[Block] = []  # the blocks that answer in the site's place
    for b in mine:
        for li in b.listens or [Listen("*", 80, False)]:
            group, _ = _group(blocks, li.address, li.port)
            default = default_of(group, li.address, li.port)
            real = [n for n in b.names if not placeholder(n)]
            names = [n for n in real if (host := _sample(n)) is None
                     or winner(blocks, li.address, li.port, host) is b]
            if default is b:
                served.append(f"{li.address}:{li.port} (default server)")
            elif names:
                served.append(f"{' '.join(names)} on {li.address}:{li.port}")
            else:
                wanted = " ".join(b.names) or '""'
                taken = winner(blocks, li.address, li.port, _sample(real[0]) or "") \
                    if real else None
                if taken is not None and taken is not default:
                    why = f"{taken.where} has the same server_name, and comes first"
                    by.append(taken)
                else:
                    why = (f"{_why_default(default, li, group)} answers every request"
                           " there")
                    by.append(default)
                shadows.append(f"{b.where} (server_name {wanted}) never answers on"
                               f" {li.address}:{li.port}: {why}")
    hint = ("give the site your domain in server_name (`bg init --server-name NAME`), or"
            f" disable {by[0].file if by else 'the default site'} (Debian's default site:"
            " rm /etc/nginx/sites-enabled/default)")
    if not served:
        return Verdict(FAIL, "; ".join(shadows), hint, blocking=True)
    if probe_url:
        verdict = judge_url(blocks, mine, probe_url, ident)
        if verdict is not None:
            return verdict
    detail = "the site serves " + ", ".join(served)
    if shadows:
        return Verdict(WARN, detail + "; but " + "; ".join(shadows), hint)
    return Verdict(OK, detail + f" ({', '.join(b.where for b in mine)})")


def target(url: str) -> tuple[str, int, str] | None:
    """(address as a listen names it, port, Host) of a probe URL; None if not http(s)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        ip = ipaddress.ip_address(host)
        address = f"[{ip.compressed}]" if ip.version == 6 else ip.compressed
    except ValueError:
        address = "127.0.0.1" if host == "localhost" else "*"
    return address, port, host


def judge_url(blocks: list[Block], mine: list[Block], url: str, ident: str
              ) -> Verdict | None:
    """A failing verdict when ``url`` would not reach the site with its X-BG-Slot line."""
    t = target(url)
    if t is None:
        return None
    address, port, host = t
    w = winner(blocks, address, port, host)
    if w is None:
        return Verdict(WARN, f"probe_url {url}: no server block of this nginx listens on"
                       f" port {port}", "set [nginx] probe_url to a URL of your site")
    if w not in mine:
        names = " ".join(n for b in mine for n in b.names if not placeholder(n))
        example = f" (e.g. http://{names.split()[0]}:{port}/)" if names else ""
        return Verdict(FAIL, f"probe_url {url} reaches {w.where} (server_name"
                       f" {' '.join(w.names) or '-'}), not the site {mine[0].where}",
                       f"set [nginx] probe_url to a URL the site answers{example}, or"
                       " make the site answer this one (server_name)", blocking=True)
    if not w.slot_header:
        return Verdict(FAIL, f"probe_url {url} reaches the site {w.where}, which sends no"
                       f" {SLOT_HEADER} header",
                       f"add `add_header {SLOT_HEADER} ${ident}_slot always;` to {w.where}")
    return None


def missing_header_hint(blocks: list[Block] | None, ident: str, url: str) -> str:
    """Why an answer through ``url`` had no X-BG-Slot header, for the switch's refusal."""
    add = f"add `add_header {SLOT_HEADER} ${ident}_slot always;` to the site"
    if blocks is None:
        return (f"either another server block answers this URL (`bg check` names it) or"
                f" the site lacks the line: {add}")
    t = target(url)
    w = winner(blocks, *t) if t is not None else None
    if w is None:
        return f"no server block of this nginx listens there; {add}"
    if w not in ours(blocks, ident):
        return f"{w.where} answers this URL, not the site proxying to {ident}_live"
    if w.slot_header:
        return (f"the site {w.where} has the {SLOT_HEADER} line: something in front of it"
                " (another proxy) answers this URL")
    return f"{add} ({w.where})"
