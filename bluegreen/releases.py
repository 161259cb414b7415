"""Script builders for releases on a host: layout, upload target, extraction, pruning.

Builders only build; ``ops/`` decides when they run. Every version that reaches a script
is checked with :func:`bluegreen.shell.safe_token` first, including versions read back
from a host (state.json, directory listings).
"""

from __future__ import annotations

from collections.abc import Iterable

from bluegreen.layout import Layout
from bluegreen.shell import ScriptExit, cat_file, lines, q, safe_token

SHA_FILE = ".bg-sha256"


def layout_script(paths: Layout) -> str:
    """Create the host layout (idempotent); ``shared`` holds secrets, so it is 0700."""
    dirs = " ".join(q(d) for d in paths.directories)
    there = " && ".join(f"[ -d {q(d)} ]" for d in paths.directories)
    # Usually all there: test with builtins before forking mkdir.
    return (f"umask 022; {{ {there}; }} || mkdir -p {dirs}; [ -d {q(paths.shared)} ]"
            f" && chmod 700 {q(paths.shared)}")


def sha_path(paths: Layout, version: str) -> str:
    return f"{paths.release(safe_token(version, 'version'))}/{SHA_FILE}"


def probe_script(paths: Layout, version: str) -> str:
    """Print the recorded sha256 of ``releases/<version>`` (nothing when absent)."""
    return f"{cat_file(sha_path(paths, version))} || true"


def upload_path(paths: Layout, version: str) -> str:
    return f"{paths.uploads}/{safe_token(version, 'version')}.tar.gz"


def receive_script(paths: Layout, version: str) -> str:
    """Write the command's stdin (the release, sent with it) to the upload path: under a
    temporary name, mode 0600, renamed when complete. :func:`extract_script` then checks
    its sha256 (a cut connection leaves a short file, never a wrong release)."""
    version = safe_token(version, "version")
    upload = upload_path(paths, version)
    tmp = q(f"{paths.uploads}/.{version}.") + '"$$.tmp"'
    return f"""(umask 077; t={tmp}
if ! cat > "$t"; then
  rm -f "$t"; echo 'receiving release {version} failed (disk full?)'
  exit {ScriptExit.EXTRACT_FAILED}
fi
mv -f "$t" {q(upload)}) || exit $?"""


# The sha256 of stdin, as "<hex> ...": OpenSSL's (SHA-NI, AVX2: ~1.5 GB/s) where the host
# has it, else coreutils' (a third as fast here; 0.5 s of a 150 MB release). A hasher that
# fails prints nothing: a mismatch, the release is refused.
_SHA256 = ("if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r;"
           " else sha256sum; fi")


def extract_script(paths: Layout, version: str, sha256: str) -> str:
    """Verify the uploaded tarball, extract it beside its final place, rename it in.

    Extraction goes to a temporary directory that is renamed only when tar succeeded,
    so a full disk or corrupt data never leaves a half release under its real name.
    """
    version = safe_token(version, "version")
    rel = paths.release(version)
    upload = upload_path(paths, version)
    tmp = f"{paths.releases}/.tmp-{version}"
    failed = (f"{{ rm -rf {q(tmp)}; rm -f {q(upload)};"
              f" echo 'extracting release {version} failed'; exit {ScriptExit.EXTRACT_FAILED}; }}")
    # No `set -e`: sh ignores it when this script runs as a tested subshell, so every
    # step that can fail (a full disk, corrupt data) exits with a code of its own.
    return f"""s=$({_SHA256} < {q(upload)})
if [ "${{s%% *}}" != {q(sha256)} ]; then
  rm -f {q(upload)}; echo "checksum mismatch after upload"; exit {ScriptExit.SHA_MISMATCH}
fi
rm -rf {q(tmp)} {q(rel)} || {failed}
mkdir -p {q(tmp)} || {failed}
tar -xzf {q(upload)} -C {q(tmp)} --no-same-owner --no-same-permissions 2>&1 || {failed}
chmod -R go-w {q(tmp)} || {failed}
printf '%s\\n' {q(sha256)} > {q(tmp + "/" + SHA_FILE)} || {failed}
mv {q(tmp)} {q(rel)} || {failed}
rm -f {q(upload)}
"""


def require_script(paths: Layout, version: str) -> str:
    """Exit non-zero (with a message) when ``releases/<version>`` is not on the host."""
    rel = paths.release(safe_token(version, "version"))
    return f"test -d {q(rel)} || {{ echo 'release {version} is not on the host'; exit 1; }}"


def lived_dir(paths: Layout) -> str:
    """One empty file per release that went live on the host, touched each time it does:
    their mtimes order the releases by when they last served."""
    return f"{paths.bg}/lived"


def mark_live_script(paths: Layout, versions: Iterable[str]) -> str:
    """Mark ``versions`` as (just now) live: what pruning keeps first."""
    marks = " ".join(q(f"{lived_dir(paths)}/{safe_token(v, 'version')}")
                     for v in sorted(set(versions)))
    if not marks:
        return ""
    d = q(lived_dir(paths))
    # `: >` (a builtin) creates the mark or updates its mtime without forking touch.
    return f"{{ [ -d {d} ] || mkdir -p {d}; }} && for m in {marks}; do : > \"$m\"; done"


def prune_script(paths: Layout, keep: int, protected: Iterable[str]) -> str:
    """Keep the ``keep`` releases that were live most recently (see :func:`mark_live_script`),
    then the newest never-live ones (a failed health gate) in what is left of ``keep``; never
    remove one in ``protected``. A host without marks keeps the newest ``keep``, as before."""
    guard = " ".join(q(safe_token(v, "version")) for v in sorted(set(protected)))
    lived = q(lived_dir(paths))
    return lines(
        "(",
        f"cd {q(paths.releases)} 2>/dev/null || exit 0",
        "set -f",  # a name listed is never a pattern
        'n=0; seen=" "',
        f"for r in $(ls -1t {lived} 2>/dev/null; ls -1t); do",
        '  case "$seen" in *" $r "*) continue ;; esac',
        '  seen="$seen$r "',
        '  [ -d "$r" ] || continue',
        "  n=$((n+1))",
        f"  [ $n -le {int(keep)} ] && continue",
        f"  for p in {guard or '.'}; do [ \"$r\" = \"$p\" ] && continue 2; done",
        f'  rm -rf -- "$r" && rm -f -- {lived}/"$r" && echo "pruned: $r"',
        "done",
        ")",
    )


def parse_pruned(stdout: str) -> list[str]:
    return [line.split(": ", 1)[1] for line in stdout.splitlines() if line.startswith("pruned: ")]


def setup_script(paths: Layout, *, upstream_file: str | None, initial_upstream: str,
                 initial_state: str, runner_setup: str) -> str:
    """Create the layout, and the upstream file (None: nginx is not on this host) and state
    when absent; prints what it made."""
    return lines(
        "set -e",
        layout_script(paths),
        'created=""',
        upstream_install_script(upstream_file, initial_upstream) if upstream_file else "",
        f"if [ ! -f {q(paths.state)} ]; then",
        f"  printf '%s' {q(initial_state)} > {q(paths.state)}",
        '  created="$created state"',
        "fi",
        runner_setup,
        f'echo "{CREATED_MARK}$created"',
    )


def upstream_install_script(upstream_file: str, initial_upstream: str) -> str:
    """Write the upstream file when absent (appends to $created)."""
    live = q(upstream_file)
    return lines(
        f"if [ ! -f {live} ]; then",
        f"  mkdir -p {q(upstream_file.rsplit('/', 1)[0] or '/')}",
        f"  printf '%s' {q(initial_upstream)} > {live}",
        '  created="$created upstream"',
        "fi",
    )


def clean_uploads_script(paths: Layout) -> str:
    """Remove upload leftovers (temporary files of a transfer cut off, tarballs never
    extracted); run under the lock, so no transfer of ours is under way."""
    up = q(paths.uploads)
    return (f"for f in {up}/.*.tmp {up}/*.tar.gz; do"
            ' if [ -f "$f" ]; then rm -f "$f"; fi; done')


def point_slot_script(paths: Layout, slot: str, version: str) -> str:
    """Point ``slots/<slot>`` at ``releases/<version>`` atomically (a new link renamed over
    the old one); exits 1 when it cannot."""
    link = paths.slot(safe_token(slot, "slot"))
    target = "../releases/" + safe_token(version, "version")
    return (f"{{ ln -sfn {q(target)} {q(link + '.tmp')} && mv -Tf {q(link + '.tmp')} {q(link)}; }}"
            f" || {{ echo 'cannot point {slot} at {version}'; exit 1; }}")


def lb_setup_script(upstream_file: str, initial_upstream: str) -> str:
    """A load balancer's part of `bg setup`: the upstream file when absent."""
    return lines('created=""', upstream_install_script(upstream_file, initial_upstream),
                 f'echo "{CREATED_MARK}$created"')


CREATED_MARK = "created:"  # setup_script, lb_setup_script: what they made (none: set up)


def read_created(stdout: str) -> list[str]:
    """What :func:`setup_script` or :func:`lb_setup_script` made ([] when all was there)."""
    return stdout.split(CREATED_MARK, 1)[-1].split() if CREATED_MARK in stdout else []
