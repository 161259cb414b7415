"""The upstream file's two-phase switch, as host scripts: stage + test (phase one), commit
+ reload (phase two), abort, and the clean-ups; with what their runs mean: nginx rejected
the new upstream (:func:`raise_if_rejected`), and the server blocks nginx tested
(:func:`read_layout`), decided here once.

Staged and backup files sit next to the upstream file (so ``mv`` is an atomic rename) and
start with a dot, which nginx's ``include *.conf`` glob never matches.
"""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from bluegreen import asroot, sites
from bluegreen.config import Config
from bluegreen.errors import ConfigError, SwitchError
from bluegreen.facts.drain import reload_script
from bluegreen.facts.sections import header, split
from bluegreen.host import CommandResult
from bluegreen.nginxconf import nginx_ident
from bluegreen.shell import ScriptExit, q, remove_files

# The stage script's sections: a fixed marker is safe here, because every line of the
# layout section starts with its line number (sites.DUMP_FILTER).
STAGE_MARKER = "@@bg-stage"


@dataclass(frozen=True)
class UpstreamFiles:
    live: str
    staged: str
    backup: str


def files(config: Config) -> UpstreamFiles:
    live = config.nginx.upstream_file
    d, name = posixpath.split(live)
    return UpstreamFiles(live=live, staged=f"{d}/.{name}.bg-new", backup=f"{d}/.{name}.bg-prev")


def abort_script(config: Config) -> str:
    """Put the previous upstream file back, byte for byte."""
    f = files(config)
    backup, live = q(f.backup), q(f.live)
    # An empty backup stands for "there was no upstream file before".
    return (f"if [ -s {backup} ]; then mv -f {backup} {live};"
            f" elif [ -f {backup} ]; then rm -f {backup} {live}; fi; rm -f {q(f.staged)}")


def discard_backup_script(config: Config) -> str:
    """The switch is recorded: its backup file must not be mistaken for an interrupted one."""
    f = files(config)
    return remove_files(f.backup, f.staged)


def stage_script(config: Config, content: str) -> str:
    """Phase one of a switch: stage the new upstream beside the live file and test it.

    The staged file is moved into place for the test only and the live file is put back
    at once, so nothing a reload could pick up changes before phase two; on a failed test
    the staged file is dropped and the script exits NGINX_TEST_FAILED with nginx's words,
    or NGINX_BROKEN_BEFORE with them when the configuration as it was fails its test too
    (a switch of a warm slot tests nginx here only, not in the lock's round trip first).
    """
    f = files(config)
    live, staged, held = q(f.live), q(f.staged), q(f.staged + ".held")
    # No `set -e`: sh ignores it in a subshell whose status is tested, so every step that
    # can fail (a full disk) says so itself.
    fail = f"{{ echo 'staging the upstream failed'; rm -f {staged}; exit 1; }}"
    # `nginx -T` tests exactly as `nginx -t` does and prints the configuration it tested:
    # its server blocks tell whether the app's site is shadowed (:mod:`bluegreen.sites`).
    dump = dump_command(config.nginx.test_command)
    layout = "" if dump is None else (
        f"{header(STAGE_MARKER, 'layout')}\nprintf '%s\\n' \"$out\" | {sites.DUMP_FILTER}\n"
        + header(STAGE_MARKER, "end"))
    # The content is written twice by printf (a builtin) rather than copied: a fork and an
    # exec fewer, as is the directory test before its mkdir.
    directory = q(posixpath.dirname(f.live))
    return f"""(
[ -d {directory} ] || mkdir -p {directory} || {fail}
printf '%s' {q(content)} > {staged} || {fail}
if [ -f {live} ]; then cp -p {live} {held} || {fail}; else rm -f {held}; fi
{{ printf '%s' {q(content)} > {live}.bg-tmp && mv -f {live}.bg-tmp {live}; }} || {fail}
rc=0; out=$( ({asroot.command(dump or config.nginx.test_command)}) 2>&1 ) || rc=$?
if [ -f {held} ]; then mv -f {held} {live}; else rm -f {live}; fi
if [ $rc -ne 0 ]; then
  rm -f {staged}
  if was=$( ({asroot.command(config.nginx.test_command)}) 2>&1 ); then
    printf '%s\\n' "$out"
    exit {ScriptExit.NGINX_TEST_FAILED}
  fi
  printf '%s\\n' "$was"
  exit {ScriptExit.NGINX_BROKEN_BEFORE}
fi
{layout}
) || exit $?"""


def dump_command(test_command: str) -> str | None:
    """``nginx -T`` from the configured ``nginx -t`` (same prefix and -c); None if unknown."""
    words = shlex.split(test_command)
    if "-t" not in words:
        return None
    return shlex.join(["-T" if w == "-t" else w for w in words])


def already_broken(config: Config, said: Mapping[str, str]) -> ConfigError:
    """nginx's configuration fails its test before bg changed anything (``said``: host ->
    nginx's words): the operation is refused, nothing changed."""
    words = "; ".join(f"{n}: {e}" for n, e in said.items())
    return ConfigError(
        f"nginx's configuration is already broken ({config.nginx.test_command}"
        f" fails before bg changed anything): {words}",
        hint="fix nginx's configuration (the message names the file and line), then"
        " run bg again; nothing was changed")


def raise_if_rejected(result: CommandResult, host: str, config: Config) -> None:
    """A stage script whose test failed: SwitchError with nginx's words (ConfigError when
    the configuration fails its test without the new upstream too)."""
    if result.exit_code == ScriptExit.NGINX_BROKEN_BEFORE:
        said = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        raise already_broken(config, {host: " / ".join(said[-5:]) or "the test command failed"})
    if result.exit_code == ScriptExit.NGINX_TEST_FAILED:
        raise SwitchError(f"{host}: nginx rejected the new upstream"
                          f" ({config.nginx.test_command}); nothing was reloaded",
                          detail=result.output)


def read_layout(stdout: str, host: str, config: Config) -> list[sites.Block] | None:
    """The server blocks a stage script's ``nginx -T`` printed (None when it printed none:
    a test command bg cannot turn into ``nginx -T``); ConfigError when another server
    block would answer the app's requests in that configuration."""
    layout = parse_layout(stdout)
    refusal = site_refusal(config, host, layout)
    if refusal is not None:
        raise refusal
    return layout


def site_refusal(config: Config, host: str, layout: list[sites.Block] | None
                 ) -> ConfigError | None:
    """Why a switch on ``host`` would go unseen: another server block shadows the app's
    site (or answers ``probe_url``) in the configuration nginx just tested; None if not."""
    if layout is None:
        return None
    verdict = sites.judge(layout, nginx_ident(config.app.name), config.nginx.probe_url)
    if not verdict.blocking:
        return None
    return ConfigError(f"{host}: nginx would not pass requests to {config.app.name}'s site:"
                       " another server block answers them (`bg check` shows it)",
                       detail=verdict.detail, hint=verdict.hint)


def parse_layout(stdout: str) -> list[sites.Block] | None:
    """The server blocks a stage script's ``nginx -T`` printed; None when it printed none
    (a test command bg cannot turn into ``nginx -T``). The hosts of a fleet mostly print
    the same configuration: a dump seen before in this process is not parsed again (~1 ms
    per host). The blocks are shared between those hosts: read them, never change them."""
    lines = split(stdout, STAGE_MARKER).get("layout")
    if lines is None:
        return None
    dump = "\n".join(lines)
    blocks = _parsed.get(dump)
    if blocks is None:
        blocks = sites.parse(dump)
        if len(_parsed) >= _PARSED_MAX:  # hosts that differ: keep the memory bounded
            _parsed.clear()
        _parsed[dump] = blocks  # one dict store: safe across the per-host threads
    return blocks


# nginx -T dumps already parsed (the key is the whole dump: nothing else goes in).
_parsed: dict[str, list[sites.Block]] = {}
_PARSED_MAX = 16


def commit_script(config: Config) -> str:
    """Phase two: keep the live file as the backup (an interrupted switch is undone from
    it), move the tested staged file in, reload (printing the old workers to drain)."""
    f = files(config)
    live, staged, backup = q(f.live), q(f.staged), q(f.backup)
    return f"""if [ ! -f {staged} ]; then echo "the staged upstream file is gone"; exit 1; fi
if [ -f {live} ]; then cp -p {live} {backup}; else : > {backup}; fi
mv -f {staged} {live}
{reload_script(config)}"""


def discard_staged_script(config: Config) -> str:
    """Drop a staged upstream that will not be committed (a failed or interrupted start)."""
    f = files(config)
    return remove_files(f.staged, f.staged + ".held")


