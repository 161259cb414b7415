"""``nginx -T`` read back: the http server blocks of nginx's configuration, in the order
nginx reads them (each included file where its ``include`` stands), with what
:mod:`bluegreen.sites` needs of each: listen sockets, server names, ``proxy_pass`` targets
and the X-BG headers it adds.
"""

from __future__ import annotations

import fnmatch
import posixpath
import re
from collections.abc import Iterator
from dataclasses import dataclass, field

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


def nginx_ident(app: str) -> str:
    """The app's name as nginx identifiers take it (``<ident>_live``, ``$<ident>_slot``).

    nginx reads ``$my-shop_slot`` as the variable ``$my`` followed by text, so every
    character outside ``[A-Za-z0-9_]`` (``-``; ``.`` in a directory name) becomes ``_``.
    Two apps whose names differ only there collide: ``bg init`` and ``bg check`` refuse
    the second on one nginx.
    """
    return re.sub(r"[^A-Za-z0-9_]", "_", app)
