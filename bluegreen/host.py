"""The one narrow interface between the engine and a machine.

The engine never asks *where* a host is. It runs shell scripts, moves files and opens
HTTP connections through a :class:`Host`; :class:`LocalHost` does that on this machine
and ``bluegreen.ssh.SshHost`` over SSH. Adding a transport means implementing this
protocol and nothing else.

Rules every implementation keeps:

* ``run`` never raises for a non-zero exit: it returns the :class:`CommandResult`.
  It raises :class:`~bluegreen.errors.HostError` only when the host itself could not
  be reached or the command timed out.
* Secrets never travel in a command line: scripts read them from files on the host.
* ``probe`` and ``http_transport`` open TCP connections *from the host's own network*,
  so ``http://127.0.0.1:4001/`` means port 4001 on that host.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shlex
import socket
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from bluegreen.errors import CommandError, HostError
from bluegreen.probe import Answer, Stream, ask

if TYPE_CHECKING:  # imported where used: `bg status` and `bg switch` never need them
    import ssl

    import httpx


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    @property
    def output(self) -> str:
        """stdout and stderr together, trimmed: what a person wants to see on failure."""
        return "\n".join(part for part in (self.stdout.strip(), self.stderr.strip()) if part)


class Host(Protocol):
    """A machine bg works on."""

    @property
    def name(self) -> str: ...

    @property
    def commands_run(self) -> int:
        """How many round trips (commands and file transfers) this host has served."""
        ...

    def run(self, script: str, *, timeout: float | None = None,
            stdin: Path | None = None) -> CommandResult:
        """Run ``script`` with ``/bin/sh -c`` on the host; ``stdin`` is a local file whose
        bytes the script reads on its standard input (a release rides the command that
        extracts it: no round trip of its own)."""
        ...

    def put(self, local: Path, remote: str, *, mode: int = 0o644) -> None:
        """Copy a local file to ``remote`` (atomically: a temporary name, then rename)."""
        ...

    def read(self, path: str) -> bytes | None:
        """The file's bytes, or None when it does not exist."""
        ...

    def write_atomic(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Replace ``path`` with ``data`` so readers see the old or the new file, never half."""
        ...

    def http_transport(self) -> httpx.BaseTransport:
        """An httpx transport whose connections start on the host itself."""
        ...

    def http_probe(self, url: str, *, timeout: float,
              headers: Mapping[str, str] | None = None) -> Answer:
        """One GET from the host itself (:mod:`bluegreen.probe`); raises ProbeError."""
        ...

    def close(self) -> None: ...


def check(result: CommandResult, what: str, host: Host) -> CommandResult:
    """Raise :class:`CommandError` naming the host and the step when ``result`` failed."""
    if not result.ok:
        raise CommandError(
            f"{host.name}: {what} failed (exit {result.exit_code})",
            detail=result.output,
        )
    return result


def q(value: str | os.PathLike[str]) -> str:
    """Quote one value for a POSIX shell."""
    return shlex.quote(os.fspath(value))


class LocalHost:
    """This machine, without SSH."""

    def __init__(self, name: str = "local") -> None:
        self._name = name
        self._count = 0
        self._lock = threading.Lock()

    @property
    def name(self) -> str:
        return self._name

    @property
    def commands_run(self) -> int:
        return self._count

    def _tick(self) -> None:
        with self._lock:
            self._count += 1

    def run(self, script: str, *, timeout: float | None = None,
            stdin: Path | None = None) -> CommandResult:
        self._tick()
        with contextlib.ExitStack() as stack:
            source: Any = subprocess.DEVNULL
            if stdin is not None:
                try:
                    source = stack.enter_context(stdin.open("rb"))
                except OSError as exc:
                    raise HostError(f"{self.name}: cannot read {stdin}: {exc.strerror}") from exc
            try:
                proc = subprocess.run(
                    ["/bin/sh", "-c", script],
                    capture_output=True,
                    stdin=source,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise HostError(
                    f"{self.name}: command timed out after {timeout}s", detail=script
                ) from exc
        return CommandResult(
            command=script,
            exit_code=proc.returncode,
            stdout=proc.stdout.decode("utf-8", "replace"),
            stderr=proc.stderr.decode("utf-8", "replace"),
        )

    def put(self, local: Path, remote: str, *, mode: int = 0o644) -> None:
        self._tick()
        self.write_atomic(remote, Path(local).read_bytes(), mode=mode, _counted=True)

    def read(self, path: str) -> bytes | None:
        self._tick()
        try:
            return Path(path).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HostError(f"{self.name}: cannot read {path}: {exc.strerror}") from exc

    def write_atomic(
        self, path: str, data: bytes, *, mode: int = 0o644, _counted: bool = False
    ) -> None:
        if not _counted:
            self._tick()
        target = Path(path)
        try:
            import tempfile

            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            try:
                os.fchmod(fd, mode)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise HostError(f"{self.name}: cannot write {path}: {exc.strerror}") from exc

    def http_transport(self) -> httpx.BaseTransport:
        import httpx

        return httpx.HTTPTransport(verify=_ssl_context())

    def http_probe(self, url: str, *, timeout: float,
              headers: Mapping[str, str] | None = None) -> Answer:
        return ask(url, connect=_connect, transport=self.http_transport, timeout=timeout,
                   headers=headers)

    def close(self) -> None:
        pass


def _connect(address: str, port: int, timeout: float) -> Stream:
    # An IP literal (every probe bg makes) connects without getaddrinfo, whose IDNA
    # encoding of the name would import ~10 ms of codecs into `bg status`.
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, address)
        except OSError:
            continue
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((address, port))
        except BaseException:
            sock.close()
            raise
        return sock
    return socket.create_connection((address, port), timeout=timeout)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Loading the CA bundle costs ~25 ms: once per process, not per transport."""
    import ssl

    return ssl.create_default_context()


def _user_name() -> str:
    """The name of this process's user (no terminal and no $USER: cron, `env -i`, CI)."""
    import pwd

    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:  # a uid without a passwd entry (containers)
        return str(os.getuid())


def controller_identity() -> dict[str, str | int]:
    """Who is acting: recorded in locks and the journal."""
    try:
        user = os.getlogin()
    except OSError:
        user = os.environ.get("USER") or os.environ.get("LOGNAME") or _user_name()
    return {"user": user, "controller": socket.gethostname(), "pid": os.getpid()}
