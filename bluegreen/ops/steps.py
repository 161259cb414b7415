"""The building blocks deploy, rollback and switch are made of, each over every host.

Each block is one phase: it runs on all hosts (in parallel) and either succeeds
everywhere or raises after undoing what it did, so the operations above read as the
deploy algorithm in DESIGN.md.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from bluegreen import nginx
from bluegreen.artifact import Artifact
from bluegreen.errors import (
    ArtifactError,
    BgError,
    CommandError,
    HealthCheckError,
    HostFailures,
    SwitchError,
)
from bluegreen.health import wait_healthy
from bluegreen.host import Host, check, q
from bluegreen.ops.core import Context, Session
from bluegreen.state import write_state_script

PORT_BUSY_EXIT = 75
SHA_MISMATCH_EXIT = 76


# ----------------------------------------------------------------------------- release


def upload_env(ctx: Context) -> None:
    env = ctx.config.app.env_file
    if env is None:
        return
    data = env.read_bytes()
    with ctx.step("upload env file (mode 0600)"):
        ctx.each(lambda h: h.write_atomic(ctx.paths.env_file, data, mode=0o600), "env upload")


def release_probe(ctx: Context, version: str) -> str:
    """Run with the lock: makes sure the layout exists (a deploy without `bg setup` works)
    and prints the checksum of ``releases/<version>`` if it is there."""
    dirs = " ".join(q(d) for d in ctx.paths.directories)
    return (
        f"mkdir -p {dirs} && chmod 700 {q(ctx.paths.shared)}\n"
        f"cat {q(ctx.paths.release(version) + '/.bg-sha256')} 2>/dev/null || true"
    )


def ship_release(ctx: Context, art: Artifact, present: dict[str, str]) -> dict[str, str]:
    """Upload the artifact where it is missing; return each host's extraction script.

    ``present`` is each host's checksum of the release (from :func:`release_probe`).
    Extraction runs later, batched with the slot's start, in the same round trip.
    """
    paths = ctx.paths
    rel = paths.release(art.version)
    upload = f"{paths.uploads}/{art.version}.tar.gz"
    tmp = f"{paths.releases}/.tmp-{art.version}"
    extract = f"""set -e
if ! echo {q(art.sha256 + "  " + upload)} | sha256sum -c --status; then
  rm -f {q(upload)}; echo "checksum mismatch after upload"; exit {SHA_MISMATCH_EXIT}
fi
rm -rf {q(tmp)} {q(rel)}
mkdir -p {q(tmp)}
tar -xzf {q(upload)} -C {q(tmp)} --no-same-owner
printf '%s\\n' {q(art.sha256)} > {q(tmp)}/.bg-sha256
mv {q(tmp)} {q(rel)}
rm -f {q(upload)}
"""

    def one(host: Host) -> str:
        sha = present.get(host.name, "").strip()
        if sha == art.sha256:
            return ""
        if sha:
            raise ArtifactError(
                f"{host.name}: release {art.version} already exists with another checksum",
                hint="a version names one build forever: deploy it under a new version",
            )
        host.put(art.path, upload, mode=0o600)
        return extract

    with ctx.step(f"upload {art.version} ({art.size / 1024:.0f} KiB, sha256 {art.sha256[:12]})"
                  ) as note:
        scripts = ctx.each(one, "upload")
        uploaded = sum(1 for v in scripts.values() if v)
        note.append(f"uploaded to {uploaded}, already on {len(scripts) - uploaded}")
    return scripts


def require_release(ctx: Context, version: str) -> None:
    rel = ctx.paths.release(version)

    def one(host: Host) -> None:
        if not host.run(f"test -d {q(rel)}").ok:
            raise BgError(
                f"{host.name}: release {version} is no longer on the host (pruned?)",
                hint=f"deploy it again: bg deploy {ctx.config.app.name}-{version}.tar.gz",
            )

    ctx.each(one, "release check")


# ----------------------------------------------------------------------------- slots


def start_slot(ctx: Context, slot: str, version: str, before: dict[str, str] | None = None
               ) -> None:
    """Stop whatever runs in ``slot``, point it at ``version``, start it.

    ``before`` holds per-host scripts to run first in the same round trip (extraction).
    """
    paths, runner = ctx.paths, ctx.runner
    port = ctx.config.slots[slot]
    link = paths.slot(slot)
    script = "\n".join([
        runner.stop_script(slot),
        f"""set -e
ln -sfn {q("../releases/" + version)} {q(link + ".tmp")}
mv -Tf {q(link + ".tmp")} {q(link)}
if command -v ss >/dev/null 2>&1 && [ -n "$(ss -Hltn 'sport = :{port}')" ]; then
  echo "port {port} is still in use by a process bg did not start:"
  ss -Hltnp 'sport = :{port}' || true
  exit {PORT_BUSY_EXIT}
fi""",
        runner.start_script(slot, port, version),
    ])

    def one(host: Host) -> None:
        first = (before or {}).get(host.name, "")
        result = host.run(f"(\n{first}\n) || exit $?\n{script}" if first else script)
        if result.exit_code == SHA_MISMATCH_EXIT:
            raise ArtifactError(f"{host.name}: the uploaded artifact's sha256 does not match")
        if result.exit_code == PORT_BUSY_EXIT:
            raise CommandError(
                f"{host.name}: port {port} of slot {slot} is taken by another process",
                detail=result.output,
                hint="stop that process, or change [slots] in bluegreen.toml",
            )
        check(result, f"starting {slot} ({version})", host)

    title = f"start {version} in {slot} on port {port}"
    with ctx.step(("extract, " if any((before or {}).values()) else "") + title):
        ctx.each(one, "start")


def stop_slot(ctx: Context, slot: str, hosts: list[Host] | None = None) -> None:
    script = ctx.runner.stop_script(slot)

    def one(host: Host) -> None:
        check(host.run(script), f"stopping {slot}", host)

    ctx.each(one, "stop", hosts)


def slot_alive(ctx: Context, host: Host, slot: str) -> bool:
    return host.run(ctx.runner.alive_script(slot)).ok


def health_gate(ctx: Context, slot: str, version: str) -> None:
    """Every host's slot healthy, or every host's new slot stopped and an error raised."""
    port = ctx.config.slots[slot]
    cfg = ctx.config.health

    def one(host: Host) -> int:
        report = wait_healthy(
            host.http_transport(), port, cfg, alive=lambda: slot_alive(ctx, host, slot)
        )
        if report.healthy:
            extra = ctx.runner.check_script(slot)
            if extra is None:
                return report.attempts
            second = host.run(extra, timeout=cfg.deadline)
            if second.ok:
                return report.attempts
            why = f"HTTP was healthy but the {ctx.runner.name} check failed: {second.output}"
        else:
            why = "its process exited" if report.died else f"last answer: {report.last}"
        tail = host.run(ctx.runner.log_script(slot, 20)).stdout.rstrip()
        raise HealthCheckError(
            f"{host.name}: {slot} ({version}) never became healthy on port {port}"
            f" after {report.elapsed:.1f}s and {report.attempts} attempts; {why}",
            detail=f"last lines of {slot}'s log:\n{tail}" if tail else "",
            hint="traffic was not switched; the previous release keeps serving",
        )

    with ctx.step(f"health {slot} GET {cfg.path} (expect {cfg.expect})") as note:
        try:
            attempts = ctx.each(one, "health check")
        except HostFailures:
            # None of the new slots may linger half-deployed, healthy or not.
            with contextlib.suppress(BgError):
                stop_slot(ctx, slot)
            raise
        note.append(f"{max(attempts.values())} attempts")


# ----------------------------------------------------------------------------- switch


@dataclass
class SwitchResult:
    old_workers: dict[str, list[int]]


def switch_traffic(ctx: Context, session: Session, slot: str, version: str) -> SwitchResult:
    """Two-phase nginx switch of every host to ``slot``; all or nothing."""
    config = ctx.config
    content = nginx.render_upstream(config, slot=slot, version=version)
    prepare = nginx.prepare_script(config, content)
    prepared: list[Host] = []
    reloaded: list[Host] = []

    def do_prepare(host: Host) -> None:
        result = host.run(prepare)
        if result.exit_code == nginx.TEST_FAILED_EXIT:
            raise SwitchError(
                f"{host.name}: nginx rejected the new upstream ({config.nginx.test_command});"
                " nothing was reloaded",
                detail=result.output,
            )
        check(result, "staging the nginx upstream", host)
        prepared.append(host)

    def abort(hosts: list[Host], reload_too: list[Host]) -> str:
        """Put every prepared host back; returns what could not be restored (or "")."""
        undo = nginx.abort_script(config)

        def one(host: Host) -> None:
            script = undo + ("\n" + config.nginx.reload_command if host in reload_too else "")
            check(host.run(script), "restoring the previous nginx upstream", host)

        try:
            ctx.each(one, "restore", hosts)
        except HostFailures as exc:
            return f"\nNOT RESTORED, check by hand: {exc.message}"
        return ""

    with ctx.step(f"nginx test (stage upstream -> {slot})"):
        try:
            ctx.each(do_prepare, "nginx test")
        except BgError as exc:
            exc.detail += abort(prepared, [])
            session.record("switch", "aborted", slot=slot, version=version, reason="nginx -t")
            raise

    old_workers: dict[str, list[int]] = {}

    def do_commit(host: Host) -> None:
        result = host.run(nginx.reload_script(config))
        reloaded.append(host)
        check(result, f"reloading nginx ({config.nginx.reload_command})", host)
        old_workers[host.name] = nginx.parse_old_workers(result.stdout)
        conf = nginx.confirm(host.http_transport(), config.nginx.probe_url, slot)
        if not conf.ok:
            raise SwitchError(
                f"{host.name}: nginx did not send traffic to {slot} after the reload"
                f" ({conf.attempts} probes of {config.nginx.probe_url} in {conf.elapsed:.1f}s)",
                detail=conf.detail,
            )

    with ctx.step(f"switch nginx -> {slot} (reload, confirm via {config.nginx.probe_url})"):
        try:
            ctx.each(do_commit, "switch")
        except BgError as exc:
            exc.detail += abort(prepared, reloaded)
            session.record("switch", "restored", slot=slot, version=version)
            if isinstance(exc, SwitchError):
                raise
            raise SwitchError(exc.message, detail=exc.detail) from exc
    return SwitchResult(old_workers)


def prune_script(ctx: Context, keep_versions: set[str]) -> str:
    keep = ctx.config.app.keep_releases
    protected = " ".join(sorted(keep_versions))
    return f"""(
cd {q(ctx.paths.releases)} 2>/dev/null || exit 0
n=0
for r in $(ls -1t); do
  n=$((n+1))
  [ $n -le {keep} ] && continue
  case " {protected} " in *" $r "*) continue;; esac
  rm -rf -- "$r" && echo "pruned: $r"
done
)"""


def finalize(
    ctx: Context,
    session: Session,
    slot: str,
    version: str,
    *,
    retire: str | None,
    old_workers: dict[str, list[int]],
    prune: bool,
) -> None:
    """One round trip per host: record the new state, wait for nginx's old workers, stop
    the old slot (``retire``), prune releases. The state is written first: whatever
    happens after, the host says what is live."""
    timeout = ctx.config.switch.drain_timeout
    keep = {v for s in session.states.values() for v in s.versions.values() if v}
    keep.add(version)
    stop = ctx.runner.stop_script(retire) if retire else ""

    def one(host: Host) -> str:
        new = session.states[host.name].switched(slot, version)
        script = "\n".join([
            write_state_script(ctx.paths, new) + " || exit 90",
            "if (",
            nginx.drain_script(old_workers.get(host.name, []), timeout),
            "); then echo drained; else echo drain-timeout; fi",
            f"(\n{stop}\n) || exit 91" if stop else "",
            prune_script(ctx, keep) if prune else "",
        ])
        result = host.run(script)
        if result.exit_code == 90:
            check(result, "recording the state", host)
        check(result, f"stopping {retire}" if retire else "draining nginx", host)
        return result.stdout

    parts = ["record state", "drain nginx workers"]
    if retire:
        parts.append(f"retire {retire}")
    if prune:
        parts.append("prune")
    with ctx.step(", ".join(parts)) as note:
        outputs = ctx.each(one, "finish")
        if any("drain-timeout" in out for out in outputs.values()):
            note.append(f"drain timed out after {timeout:g}s on some hosts")
        pruned = sorted({line.split(": ", 1)[1] for out in outputs.values()
                         for line in out.splitlines() if line.startswith("pruned: ")})
        if pruned:
            note.append("pruned " + ", ".join(pruned))
