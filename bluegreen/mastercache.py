"""nginx's master, remembered on the host between reloads.

Without a working ``[nginx] pid_file`` (the default ``/run/nginx.pid`` where nginx writes
elsewhere), finding the master costs every reload an ``nginx -T`` and an ``nginx -V``
(:func:`bluegreen.drain.master_discovery_script`): a full parse of nginx's configuration,
on the switch's critical path. The answer is kept in ``<app.root>/bg/nginx-master`` as
``KEY PID STARTTIME METHOD WHERE`` and believed only while it still names the same process:

* invalidation: the process ``PID`` must still exist and its start time (field 22 of
  ``/proc/PID/stat``, in clock ticks since boot) must equal ``STARTTIME``, so a restarted
  nginx, a binary upgrade (a new master) or a reused pid all miss; and ``KEY`` must match
  the config's ``pid_file``, ``test_command`` and ``reload_command``, so pointing bg at
  another nginx misses too. A miss runs the full discovery and writes the file again.
* and the pid file it was found through (``WHERE``, for the pid_file and nginx -T methods)
  must still name it: during a binary upgrade the pid file names the new master while the
  old one still runs, and a changed ``pid`` directive moves the file.
* the same process that the discovery took for this configuration's master at the time
  is still that master (a master never becomes anything else), so a hit is as good as a
  fresh discovery. The check reads /proc and the pid file with shell builtins only: no
  command is forked.

Any write failure is ignored (e.g. an LB host without the app's directory): the full
discovery then simply runs every time.
"""

from __future__ import annotations

import zlib

from bluegreen.config import Config
from bluegreen.layout import Layout
from bluegreen.shell import q

# Method names with their spaces taken out, for one word in the cache line.
_WORDS = {"nginx -T": "nginx-T", "process tree": "process-tree"}


def cache_file(config: Config) -> str:
    return Layout(config.app.root).master_cache


def key(config: Config) -> str:
    n = config.nginx
    text = "\0".join((n.pid_file, n.test_command, n.reload_command))
    return f"k{zlib.crc32(text.encode()):08x}"


# Sets $bg_mc_start to field 22 of /proc/$1/stat (the process's start time), "" when gone.
_START = r"""bg_mc_start() {
  bg_mc_start=; s=; { read -r s < "/proc/$1/stat"; } 2>/dev/null || return 0
  s=${s##*) }; set -- $s; bg_mc_start=${20:-}
}
"""


def cached(config: Config, discovery: str) -> str:
    """Shell: the master from the cache when its process is still the one recorded, else
    ``discovery`` (which sets ``$master``, ``$method``, ``$where`` and prints the
    ``master:`` line) and the cache written from its answer."""
    file, k = q(cache_file(config)), q(key(config))
    unword = " ".join(f"{w}) method={q(m)};;" for m, w in _WORDS.items())
    word = " ".join(f"{q(m)}) bg_mc_m={w};;" for m, w in _WORDS.items())
    return f"""{_START}bg_mc_hit=
if {{ read -r bg_mc_k bg_mc_p bg_mc_s bg_mc_m bg_mc_w < {file}; }} 2>/dev/null \\
   && [ "$bg_mc_k" = {k} ] && [ -n "$bg_mc_s" ]; then
  bg_mc_start "$bg_mc_p"; bg_mc_f=$bg_mc_p
  if [ -n "$bg_mc_w" ]; then  # (a pid file without a final newline still counts)
    bg_mc_f=; {{ read -r bg_mc_f < "$bg_mc_w"; }} 2>/dev/null || :
  fi
  if [ "$bg_mc_start" = "$bg_mc_s" ] && [ "$bg_mc_f" = "$bg_mc_p" ]; then
    master=$bg_mc_p; method=$bg_mc_m; where=$bg_mc_w
    case "$method" in {unword} esac
    bg_mc_hit=1
    echo "master: $master $method${{where:+ $where}}"
  fi
fi
if [ -z "$bg_mc_hit" ]; then
{discovery}
  if [ -n "$master" ]; then
    bg_mc_start "$master"; bg_mc_m=$method
    case "$method" in {word} esac
    [ -z "$bg_mc_start" ] || {{ printf '%s %s %s %s %s\\n' {k} "$master" "$bg_mc_start" \\
      "$bg_mc_m" "$where" > {file}; }} 2>/dev/null || :
  fi
fi
"""
