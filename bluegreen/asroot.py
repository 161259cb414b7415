"""What bg runs as root on an nginx host, and how a deploy user who is not root runs it.

On a stock Debian server nginx is ``/usr/sbin/nginx``, outside a user's default PATH
(``/usr/local/bin:/usr/bin:/bin:/usr/games``), and ``nginx -t``, ``nginx -T`` and
``nginx -s reload`` need root (the logs, the pid file, the master's signals), while the
workers a reload retires run as www-data. So:

* A bare ``nginx`` at the start of ``[nginx] test_command`` / ``reload_command`` (the
  defaults) is the host's nginx, found on the PATH or in :data:`SEARCH_DIRS`, and it runs
  through ``sudo -n`` when the SSH user is not root (auto-detected on the host, per command:
  no config key). A command that names a path (``/usr/sbin/nginx -t``) or says ``sudo``
  itself runs exactly as written.
* Early SIGQUIT to old workers that are not the user's goes through :data:`QUIT_HELPER`,
  a root-owned script that signals nginx workers only.
* Both are allowed by one sudoers rule, :func:`sudo_rule`, in :func:`sudoers_file`;
  nginx/provision.sh installs it and the helper, the README gives it verbatim, and
  ``bg check`` (:func:`check_script`, :func:`evaluate`) names it when it is missing.

Why sudo for a non-root user, without first asking sudo whether the rule exists: for the
nginx a bare ``nginx`` means, these commands cannot work without root, so there is nothing
to fall back to; when sudo refuses, the command says so and names the rule (``bg check``
too). Why a helper rather than ``kill -QUIT`` in the rule: sudoers cannot restrict a pid
argument, and root's ``kill -QUIT ANY`` would stop any process on the host; the helper lets
the user do only what ``nginx -s reload`` already does 100 ms later.
"""

from __future__ import annotations

import re

from bluegreen.shell import q

SEARCH_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
QUIT_HELPER = "/usr/local/sbin/bg-nginx-quit"
DEFAULT_NGINX = "/usr/sbin/nginx"
# The nginx arguments bg runs through sudo: test, dump (bg check, the drain's master
# discovery) and reload. `-V` (compiled paths) needs no root and is not in the rule.
RULE_ARGS = ("-t", "-T", "-s reload")

_BARE = re.compile(r"^(\s*)nginx(?=\s|$)")

# The host's nginx as the function ``bg_nginx``: through sudo when not root. Found first
# on the PATH (a root login's has the sbin directories), then in SEARCH_DIRS.
_FUNCTION = (
    "bg_nginx() {{ bg_ngx=$(PATH=\"$PATH:{dirs}\"; command -v nginx) || {{ echo"
    " \"nginx: not found on PATH or in {where}\" >&2; return 127; }};"
    " case \"$1\" in (-v|-V) \"$bg_ngx\" \"$@\"; return;; esac;"
    " if [ \"$(id -u)\" = 0 ]; then \"$bg_ngx\" \"$@\"; return; fi;"
    " sudo -n \"$bg_ngx\" \"$@\" && return; bg_nrc=$?;"
    " sudo -n -l \"$bg_ngx\" \"$@\" >/dev/null 2>&1 || echo \"bg: sudo does not allow"
    " $(id -un) to run '$bg_ngx $*' as root: add the sudo rule that 'bg check' names\" >&2;"
    " return $bg_nrc; }}"
)


def is_bare(command: str) -> bool:
    """Does ``command`` start with a bare ``nginx`` (no path, no sudo)?"""
    return _BARE.match(command) is not None


def command(text: str) -> str:
    """``text`` as bg runs it on a host: a leading bare ``nginx`` becomes the host's nginx,
    found outside the PATH and run through ``sudo -n`` by a user who is not root. Any
    other command is returned unchanged."""
    if not is_bare(text):
        return text
    function = _FUNCTION.format(dirs=":".join(SEARCH_DIRS), where=", ".join(SEARCH_DIRS))
    return function + "; " + _BARE.sub(r"\1bg_nginx", text, count=1)


def find_script() -> str:
    """Shell printing the host's nginx binary as :func:`command` finds it (or nothing).
    A subshell: put it inside ``$( ... )`` with spaces (``$((`` is arithmetic)."""
    return f"(PATH=\"$PATH:{':'.join(SEARCH_DIRS)}\"; command -v nginx)"


def sudoers_file(user: str) -> str:
    # sudo skips files in sudoers.d whose name holds a dot or ends in '~'.
    return "/etc/sudoers.d/bg-" + re.sub(r"[^A-Za-z0-9_-]", "_", user)


def sudo_rule(user: str, nginx: str = DEFAULT_NGINX) -> str:
    """The one sudoers line a non-root deploy user needs (exact commands, no password)."""
    allowed = [f"{nginx} {args}" for args in RULE_ARGS] + [QUIT_HELPER]
    return f"{user} ALL=(root) NOPASSWD: " + ", ".join(allowed)


def _foreign(pids: str) -> str:
    """Shell test: nginx's workers in ``$pids`` are not the user's, and the user is not root
    (``kill -0`` is a builtin: root never pays for the ``id``)."""
    return f'! kill -0 ${pids} 2>/dev/null && [ "$(id -u)" != 0 ]'


def early_quit_start(pids: str, wait_ms: int) -> str:
    """Before a reload, when nginx's workers in ``$pids`` are not the user's: start
    :data:`QUIT_HELPER` in the background; as root it waits up to ``wait_ms`` for a newer
    worker of their master and signals them then. sudo's start-up (tens of ms) so overlaps
    the reload; started after it, the helper signalled ~60 ms after the new workers' fork,
    against ~25 ms for root's ``kill`` and nginx's own 100 ms (bench/early_quit.py)."""
    return (f'bg_quitter=\nif [ -n "${pids}" ] && {_foreign(pids)}; then\n'
            f'  sudo -n {q(QUIT_HELPER)} --wait {int(wait_ms)} ${pids} </dev/null >/dev/null'
            " 2>&1 &\n  bg_quitter=$!\nfi\n")


def early_quit_join() -> str:
    """After the reload (its status in ``$bg_rc``): wait for the helper of
    :func:`early_quit_start` when the reload succeeded (it ends on its own otherwise)."""
    return 'if [ -n "$bg_quitter" ] && [ "$bg_rc" = 0 ]; then wait "$bg_quitter"; fi\n'


def early_quit_script(pids: str, wait_ms: int) -> str:
    """Inside the drain's early SIGQUIT (``$m``: the workers' master), when the workers in
    ``$pids`` are not the user's: :data:`QUIT_HELPER` signals them (unless the one
    :func:`early_quit_start` started already did), and ``$m`` is cleared so the caller's own
    wait-and-kill, which ``kill`` cannot do, is skipped."""
    return (f'if [ -n "$m" ] && {_foreign(pids)}; then\n'
            f'  [ -n "${{bg_quitter:-}}" ] || sudo -n {q(QUIT_HELPER)} --wait {int(wait_ms)}'
            f' ${pids} >/dev/null 2>&1\n  m=\nfi\n')


# ------------------------------------------------------------------ bg check: the rule


def check_script(test_command: str, reload_command: str) -> str:
    """For `bg check`: when the user is not root and a command needs sudo, which of the
    rule's commands sudo allows (``sudo -n -l``: never prompts, changes nothing)."""
    wanted = []
    if is_bare(test_command):
        wanted += ["-t", "-T"]
    if is_bare(reload_command):
        wanted.append("-s reload")
    says_sudo = any(c.split()[:1] == ["sudo"] for c in (test_command, reload_command))
    if not wanted and not says_sudo:
        return "echo not-needed"
    probes = "".join(
        f'  if sudo -n -l "$b" {args} >/dev/null 2>&1; then echo "allowed $b {args}";'
        f' else echo "refused $b {args}"; fi\n' for args in wanted)
    helper = q(QUIT_HELPER)
    return f"""if [ "$(id -u)" = 0 ]; then echo not-needed
elif ! command -v sudo >/dev/null 2>&1; then echo "user $(id -un)"; echo no-sudo
else
  echo "user $(id -un)"; b=$( {find_script()} ); b=${{b:-{DEFAULT_NGINX}}}
{probes}  if [ ! -x {helper} ]; then echo "no-helper"
  elif sudo -n -l {helper} >/dev/null 2>&1; then echo "allowed {QUIT_HELPER}"
  else echo "refused {QUIT_HELPER}"; fi
fi"""


def evaluate(lines: list[str]) -> tuple[str, str, str] | None:
    """``(status, detail, hint)`` of the "sudo rule" check from :func:`check_script`'s
    section; None when no sudo is needed (root, or commands that need none)."""
    if not lines or lines[0] == "not-needed":
        return None
    user = lines[0].removeprefix("user ").strip() if lines[0].startswith("user ") else "?"
    allowed = [ln.removeprefix("allowed ") for ln in lines if ln.startswith("allowed ")]
    refused = [ln.removeprefix("refused ") for ln in lines if ln.startswith("refused ")]
    nginx = next((c.split()[0] for c in allowed + refused if c != QUIT_HELPER), DEFAULT_NGINX)
    rule = (f"add {sudoers_file(user)} (mode 0440, `visudo -f` it) with the line:"
            f"  {sudo_rule(user, nginx)}; nginx/provision.sh installs it and {QUIT_HELPER}")
    if "no-sudo" in lines:
        return "fail", f"{user} is not root and sudo is not installed", \
            "install sudo (Debian: apt-get install sudo), then " + rule
    if any(c != QUIT_HELPER for c in refused):
        return "fail", f"sudo does not allow {user} to run " + ", ".join(
            f"`{c}`" for c in refused if c != QUIT_HELPER) + " as root", rule
    early = "bg cannot tell nginx's old workers to quit early (nginx's master does, 100 ms" \
            " later)"
    if "no-helper" in lines:
        return "warn", f"{QUIT_HELPER} is not installed: {early}", rule
    if refused:
        return "warn", f"sudo does not allow {user} to run {QUIT_HELPER}: {early}", rule
    return "ok", f"{user} runs " + ", ".join(f"`{c}`" for c in allowed) + " as root (sudo -n)", ""
