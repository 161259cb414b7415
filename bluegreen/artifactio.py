"""The one read of an artifact on the controller: its raw bytes hashed (sha256) as gzip
reads them, gunzipped in large blocks with zlib checking the CRC, and the decompressed
stream counted against the size limit. :mod:`bluegreen.artifact` checks the tar members
read through these."""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from typing import IO, Any

BLOCK = 1 << 20  # the artifact is read in blocks of this size (fewer Python calls)


class TooBig(Exception):
    """More decompressed bytes than the limit allows."""


class Hashed(io.RawIOBase):
    """The artifact's raw bytes as gzip reads them, hashed on the way: the sha256 the host
    verifies is that of the very bytes checked (one read of the file, not two)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)  # type: ignore[attr-defined]
        if n:
            self.digest.update(memoryview(buffer)[:n])
            self.size += n
        return int(n or 0)


class Gunzip(io.RawIOBase):
    """gunzip of ``raw`` (every member, as gzip and tar read them), in blocks of ``BLOCK``:
    ``gzip.GzipFile`` feeds zlib 8 KiB at a time and checks the CRC in Python, two thirds of
    the check's time on a large release; zlib (wbits 31) checks the CRC and length itself."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.zlib = zlib.decompressobj(31)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = len(buffer)
        while True:
            z = self.zlib
            if z.unconsumed_tail:
                data = z.decompress(z.unconsumed_tail, want)
            elif z.eof:  # the member ended: another one, zero padding or the end of the file
                rest = z.unused_data.lstrip(b"\0")
                while not rest:
                    block = self.raw.read(BLOCK)
                    if not block:
                        return 0
                    rest = block.lstrip(b"\0")
                if not rest.startswith(b"\x1f\x8b"):
                    raise gzip.BadGzipFile("trailing data after the last gzip member")
                self.zlib = zlib.decompressobj(31)
                data = self.zlib.decompress(rest, want)
            else:
                block = self.raw.read(BLOCK)
                if not block:
                    raise EOFError("the gzip stream is truncated")
                data = z.decompress(block, want)
            if data:
                buffer[: len(data)] = data
                return len(data)


class Counted(io.RawIOBase):
    """The decompressed stream, counted: stops once more than ``limit`` bytes came out."""

    def __init__(self, inner: IO[bytes], limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.seen = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(min(len(buffer), BLOCK))
        self.seen += len(data)
        if self.seen > self.limit:
            raise TooBig
        buffer[: len(data)] = data
        return len(data)
