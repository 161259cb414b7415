"""nginx's own record of an app's real traffic, read by the verification window.

bg's upstream file defines a ``log_format`` (:data:`FORMAT`, named :func:`format_name`)
and bg's site logs the app's requests in it to :func:`log_path` on every nginx host. The
window reads that file from a byte offset taken before the switch, so its figures cover
exactly the window and this app; requests are told apart by the upstream address that
served them (the new slot, the old one, a canary). The scripts that read the file and the
parser of their output live here together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bluegreen.nginxconf import nginx_ident
from bluegreen.shell import q

# Tab-separated (nginx escapes a tab inside a value as \x09): time, status, every upstream
# address tried (", " between retries), their statuses, the client, the request line.
FORMAT = r"$msec\t$status\t$upstream_addr\t$upstream_status\t$remote_addr\t$request"
MARK = "bg-verify"
MISSING = "bg-verify-missing"
# Past this size the file is emptied before a window starts (nginx appends with O_APPEND,
# so it keeps writing at the new end); a logrotate rule with copytruncate works as well.
MAX_BYTES = 64 * 1024 * 1024


def format_name(app: str) -> str:
    """The ``log_format`` name in the upstream file (the template spells it ``{{ ident }}_bg``):
    named after the app's nginx name, valid for any app name."""
    return f"{nginx_ident(app)}_bg"


def log_path(root: str) -> str:
    """Where bg's site writes the app's requests on every nginx host, unless
    ``[verify] access_log`` says otherwise (``VerifyConfig.log_path``)."""
    return f"{root}/logs/nginx-access.log"


def format_directive(app: str) -> str:
    """The ``log_format`` line, for placeholder upstream files written before ``bg setup``."""
    return f"log_format {format_name(app)} '{FORMAT}';\n"


def site_line(app: str, path: str) -> str:
    return f"access_log {path} {format_name(app)};"


def begin_script(path: str, dump_command: str | None) -> str:
    """Before the switch: does nginx's configuration write ``path`` (``nginx -T``, else the
    file's existence), and its size now (the window reads from there)."""
    p = q(path)
    exists = f"if [ -f {p} ]; then echo uses=yes; else echo uses=no; fi"
    if dump_command:
        # An `access_log PATH ...` directive, not a comment mentioning it. A dump nginx
        # refuses (e.g. sudo allows only `nginx -t`) leaves the file's existence to tell.
        uses = (f"if dump=$( ({dump_command}) 2>/dev/null ); then\n"
                f"  if printf '%s\\n' \"$dump\" | awk -v p={p}"
                " '$1 == \"access_log\" && ($2 == p || $2 == p \";\") { found = 1 }"
                " END { exit !found }'; then echo uses=yes; else echo uses=no; fi\n"
                f"else {exists}; fi")
    else:
        uses = exists
    return f"""{uses}
if [ -f {p} ] && [ "$(wc -c < {p})" -gt {MAX_BYTES} ] && [ -w {p} ]; then : > {p}; fi
if [ -f {p} ]; then echo "offset=$(wc -c < {p})"; else echo offset=0; fi"""


@dataclass(frozen=True)
class Begin:
    uses: bool
    offset: int


def parse_begin(out: str) -> Begin:
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return Begin(uses=fields.get("uses") == "yes", offset=int(fields.get("offset", "0") or 0))


# Counts complete lines only (a line nginx is still writing waits for the next read) and
# prints where the next read starts. A request belongs to the window when one of the
# upstream addresses it tried is judged (``new``); with ``all`` also when it did not go to
# the old slot alone (a request no upstream answered names no address of either).
_COUNT = r"""
BEGIN { FS = "\t"; n = split(new, a, " "); for (i = 1; i <= n; i++) NEW[a[i]] = 1
        n = split(old, a, " "); for (i = 1; i <= n; i++) OLD[a[i]] = 1 }
{
  end = pos + length($0) + 1
  if (end > total) exit
  pos = end
  if ($1 + 0 < since) next
  k = split($3, u, /, | : /); judged = 0; oldonly = (k > 0)
  for (i = 1; i <= k; i++) { if (u[i] in NEW) judged = 1; if (!(u[i] in OLD)) oldonly = 0 }
  if (mode == "all" && !oldonly) judged = 1
  if (!judged) next
  req++; s = $2 + 0
  if (s >= 500) e5++
  else if (s == 499) eun++
}
END { printf "%s %d %d %d %d\n", mark, off + pos, req, e5, eun }
"""


def count_script(path: str, offset: int, *, new: Iterable[str], old: Iterable[str],
                 mode: str = "all", since: float = 0.0) -> str:
    """The requests of the window logged since ``offset`` (and at ``since``, a unix time,
    or later): ``bg-verify NEXT REQ 5XX 499``. ``mode`` ``canary``: only the requests
    an address in ``new`` served."""
    p = q(path)
    return f"""if [ ! -f {p} ]; then echo {MISSING}; else
off={int(offset)}; size=$(wc -c < {p})
if [ "$size" -lt "$off" ]; then off=0; fi
tail -c +$((off + 1)) {p} | head -c $((size - off)) | LC_ALL=C awk -v off="$off" \
 -v total=$((size - off)) -v since={since:.3f} -v mark={MARK} -v mode={q(mode)} \
 -v new={q(" ".join(new))} -v old={q(" ".join(old))} {q(_COUNT)}
fi"""


@dataclass(frozen=True)
class Count:
    offset: int  # where the next read starts
    requests: int
    server_errors: int  # 5xx
    unanswered: int  # 499: the client gave up waiting

    @property
    def errors(self) -> int:
        return self.server_errors + self.unanswered


def parse_count(out: str) -> Count | None:
    """None when the file is gone (nginx not writing it)."""
    for line in out.splitlines():
        words = line.split()
        if words[:1] == [MARK] and len(words) == 5:
            n = [int(w) for w in words[1:]]
            return Count(n[0], n[1], n[2], n[3])
    return None
