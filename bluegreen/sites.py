"""Which nginx server block answers a request, read from ``nginx -T``: is the app's site
shadowed by another (Debian's ``sites-enabled/default`` is ``default_server`` on port 80)?

nginx picks the server for a request in two steps (https://nginx.org/en/docs/http/
request_processing.html): the listen socket (a block listening on the exact address wins
over one on ``*``), then among the blocks on that socket the one whose ``server_name``
matches the Host header (exact, then the longest ``*.`` wildcard, then ``.*``, then the
first regex), else the socket's default: the block marked ``default_server``, else the
first one in configuration order. :func:`parse` rebuilds that order from the dump (each
included file is read where its ``include`` stands) and :func:`judge` applies the rules to
the blocks that ``proxy_pass`` to the app's upstream.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlsplit

OK, FAIL, WARN, SKIP = "ok", "fail", "warn", "skip"
SLOT_HEADER = "X-BG-Slot"
APP_HEADER = "X-BG-App"
_MARKER = re.compile(r"^# configuration file (.+):$")
_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|\'((?:[^\'\\]|\\.)*)\'|(#.*$)|([;{}])'
                    r'|([^\s;{}"\'#]+)')


# Keeps what :func:`parse` reads of an ``nginx -T`` on its stdin, each line as ``N:text``
# (N: its line in the dump): file markers and every line not blank or a comment.
# bg's own upstream files keep the two comment lines that name their app and ports.
DUMP_FILTER = ("awk '/^# (configuration file |app=|slots=)/{print NR\":\"$0; next} "
               "/^[[:space:]]*(#|$)/{next} {print NR\":\"$0}'")


@dataclass(frozen=True)
class Listen:
    address: str  # "*" (any IPv4), "[::]" (any IPv6), or a literal such as 127.0.0.1
    port: int
    default: bool

    def __str__(self) -> str:
        return f"{self.address}:{self.port}" + (" default_server" if self.default else "")


@dataclass
class Block:
    file: str
    line: int
    listens: list[Listen] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    proxies: list[str] = field(default_factory=list)
    slot_header: bool = False
    bg_probe: bool = False  # bg's own probe server (X-BG-App), in the upstream file

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _tokens(text: str) -> Iterator[str]:
    """nginx's tokens of one line: words (quotes removed), ``;``, ``{`` and ``}``."""
    for m in _TOKEN.finditer(text):
        if m.group(3) is not None:
            return
        yield next(g for g in (m.group(1), m.group(2), m.group(4), m.group(5)) if g is not None)


def _files(dump: str) -> tuple[list[str], dict[str, list[tuple[str, int]]]]:
    """File names in dump order, and each file's tokens with their line in that file.
    ``dump`` is what :data:`DUMP_FILTER` keeps (``N:text``) or a raw dump."""
    order: list[str] = []
    tokens: dict[str, list[tuple[str, int]]] = {}
    current: list[tuple[str, int]] | None = None
    start = 0
    for i, raw in enumerate(dump.splitlines(), 1):
        m = re.match(r"^(\d+):(.*)$", raw)
        n, text = (int(m.group(1)), m.group(2)) if m else (i, raw)
        marker = _MARKER.match(text)
        if marker:
            name = marker.group(1)
            order.append(name)
            current = tokens.setdefault(name, [])
            start = n
            continue
        if current is not None:
            current.extend((t, n - start) for t in _tokens(text))
    return order, tokens


def file_texts(dump: str) -> dict[str, str]:
    """Each file's lines as the dump (or :data:`DUMP_FILTER`) shows them."""
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for raw in dump.splitlines():
        m = re.match(r"^\d+:(.*)$", raw)
        text = m.group(1) if m else raw
        marker = _MARKER.match(text)
        if marker:
            current = out.setdefault(marker.group(1), [])
        elif current is not None:
            current.append(text)
    return {f: "\n".join(lines) + "\n" for f, lines in out.items()}


def parse(dump: str) -> list[Block]:
    """The http server blocks of an ``nginx -T`` dump, in nginx's configuration order."""
    order, tokens = _files(dump)
    if not order:
        return []
    reader = _Reader(order, tokens)
    reader.walk(order[0], (order[0],))
    return reader.blocks


class _Reader:
    """Reads the files from the main one on, each included file where its include is."""

    def __init__(self, order: list[str], tokens: dict[str, list[tuple[str, int]]]) -> None:
        self.order, self.tokens = order, tokens
        self.conf_dir = posixpath.dirname(order[0])
        self.blocks: list[Block] = []
        self.stack: list[str] = []  # the contexts around the current token: http, server...

    def walk(self, name: str, chain: tuple[str, ...]) -> None:
        words: list[str] = []
        line = 0
        for tok, n in self.tokens.get(name, []):
            if tok not in (";", "{", "}"):
                line = line if words else n
                words.append(tok)
                continue
            if tok == "{":
                if words[:1] == ["server"] and self.stack == ["http"]:
                    self.blocks.append(Block(name, line))
                self.stack.append(words[0] if words else "")
            elif tok == "}":
                if self.stack:
                    self.stack.pop()
            elif words:
                self.statement(words, chain)
            words = []

    def statement(self, words: list[str], chain: tuple[str, ...]) -> None:
        head, args = words[0], words[1:]
        if head == "include" and args:
            pattern = args[0] if args[0].startswith("/") else posixpath.join(self.conf_dir,
                                                                            args[0])
            for f in self.order:  # nginx -T lists files as it read them: in glob order
                if f not in chain and fnmatch.fnmatchcase(f, pattern):
                    self.walk(f, (*chain, f))
            return
        if self.stack[:2] != ["http", "server"]:
            return
        block = self.blocks[-1]
        if len(self.stack) == 2 and head == "listen" and args:
            listen = _listen(args)
            if listen is not None:
                block.listens.append(listen)
        elif len(self.stack) == 2 and head == "server_name":
            block.names.extend(a.lower() for a in args)
        elif head == "proxy_pass" and args:
            block.proxies.append(args[0])
        elif head == "add_header" and args and args[0].lower() == SLOT_HEADER.lower():
            block.slot_header = True
        elif head == "add_header" and args and args[0].lower() == APP_HEADER.lower():
            block.bg_probe = True


def _listen(args: list[str]) -> Listen | None:
    spec = args[0]
    if spec.startswith("unix:"):
        return None
    default = "default_server" in args[1:] or "default" in args[1:]
    if spec.startswith("["):
        address, _, port = spec[1:].partition("]")
        return Listen(f"[{address}]" if address != "::" else "[::]",
                      int(port[1:]) if port.startswith(":") and port[1:].isdigit() else 80,
                      default)
    if spec.isdigit():
        return Listen("*", int(spec), default)
    address, _, port = spec.rpartition(":") if ":" in spec else (spec, "", "80")
    address = {"0.0.0.0": "*", "localhost": "127.0.0.1"}.get(address, address)
    return Listen(address, int(port) if port.isdigit() else 80, default)


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
