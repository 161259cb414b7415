"""The building blocks deploy, rollback and switch are made of, each over every host.

Each block is one phase: it runs on all hosts (in parallel) and either succeeds
everywhere or raises after undoing what it did, so the operations above read as the
deploy algorithm in DESIGN.md.
"""

from __future__ import annotations

import contextlib
import posixpath
from dataclasses import dataclass

from bluegreen import nginx
from bluegreen.artifact import Artifact
from bluegreen.errors import ArtifactError, BgError, CommandError, HealthCheckError, SwitchError
from bluegreen.health import wait_healthy
from bluegreen.host import Host, check, q
from bluegreen.ops.core import Context, HostFailures, Session

PORT_BUSY_EXIT = 75
SHA_MISMATCH_EXIT = 76


def _sh(host: Host, script: str, what: str) -> str:
    return check(host.run(script), what, host).stdout


# ----------------------------------------------------------------------------- release


def upload_env(ctx: Context) -> None:
    env = ctx.config.app.env_file
    if env is None:
        return
    data = env.read_bytes()
    with ctx.step("upload env file (mode 0600)"):
        ctx.each(lambda h: h.write_atomic(ctx.paths.env_file, data, mode=0o600), "env upload")


def ensure_release(ctx: Context, art: Artifact) -> None:
    """Every host has ``releases/<version>`` with this artifact's checksum (uploaded once)."""
    paths = ctx.paths
    rel = paths.release(art.version)
    sha_file = f"{rel}/.bg-sha256"

    def one(host: Host) -> str:
        present = host.run(f"cat {q(sha_file)} 2>/dev/null || true").stdout.strip()
        if present == art.sha256:
            return "present"
        if present:
            raise ArtifactError(
                f"{host.name}: release {art.version} already exists with another checksum",
                hint="a version names one build forever: deploy it under a new version",
            )
        upload = f"{paths.uploads}/{art.version}.tar.gz"
        host.put(art.path, upload, mode=0o600)
        tmp = f"{paths.releases}/.tmp-{art.version}"
        script = f"""set -e
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
        result = host.run(script)
        if result.exit_code == SHA_MISMATCH_EXIT:
            raise ArtifactError(f"{host.name}: the uploaded artifact's sha256 does not match")
        check(result, f"extracting release {art.version}", host)
        return "uploaded"

    with ctx.step(f"upload {art.version} ({art.size / 1024:.0f} KiB, sha256 {art.sha256[:12]})"
                  ) as note:
        done = ctx.each(one, "upload")
        uploaded = sum(1 for v in done.values() if v == "uploaded")
        note.append(f"uploaded to {uploaded}, already on {len(done) - uploaded}")


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


def start_slot(ctx: Context, slot: str, version: str) -> None:
    """Stop whatever runs in ``slot``, point it at ``version``, start it."""
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
        result = host.run(script)
        if result.exit_code == PORT_BUSY_EXIT:
            raise CommandError(
                f"{host.name}: port {port} of slot {slot} is taken by another process",
                detail=result.output,
                hint="stop that process, or change [slots] in bluegreen.toml",
            )
        check(result, f"starting {slot} ({version})", host)

    with ctx.step(f"start {version} in {slot} on port {port}"):
        ctx.each(one, "start")


def stop_slot(ctx: Context, slot: str, hosts: list[Host] | None = None) -> None:
    script = ctx.runner.stop_script(slot)
    ctx.each(lambda h: _sh(h, script, f"stopping {slot}") and None, "stop", hosts)


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

    def abort(hosts: list[Host], reload_too: list[Host]) -> None:
        undo = nginx.abort_script(config)
        for host in hosts:
            script = undo + ("\n" + config.nginx.reload_command if host in reload_too else "")
            host.run(script)

    with ctx.step(f"nginx test (stage upstream -> {slot})"):
        try:
            ctx.each(do_prepare, "nginx test")
        except BgError:
            abort(prepared, [])
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
            abort(prepared, reloaded)
            session.record("switch", "restored", slot=slot, version=version)
            if isinstance(exc, SwitchError):
                raise
            raise SwitchError(exc.message, detail=exc.detail) from exc
    return SwitchResult(old_workers)


def drain_and_retire(ctx: Context, old_slot: str | None, old_workers: dict[str, list[int]]
                     ) -> None:
    """Wait for nginx's old workers, then stop the old slot (unless kept warm)."""
    timeout = ctx.config.switch.drain_timeout
    retire = ctx.should_retire and old_slot is not None
    stop = ctx.runner.stop_script(old_slot) if retire and old_slot else ""

    def one(host: Host) -> str:
        drained = host.run(nginx.drain_script(old_workers.get(host.name, []), timeout))
        if stop:
            check(host.run(stop), f"stopping {old_slot}", host)
        return "drained" if drained.ok else "drain timed out"

    title = f"drain nginx workers, retire {old_slot}" if retire else "drain nginx workers"
    with ctx.step(title) as note:
        results = ctx.each(one, "retire")
        if "drain timed out" in results.values():
            note.append(f"drain timed out after {timeout:g}s on some hosts")


def prune(ctx: Context, keep_versions: set[str]) -> None:
    keep = ctx.config.app.keep_releases
    rels = ctx.paths.releases
    protected = " ".join(sorted(keep_versions))
    script = f"""cd {q(rels)} 2>/dev/null || exit 0
n=0
for r in $(ls -1t); do
  n=$((n+1))
  [ $n -le {keep} ] && continue
  case " {protected} " in *" $r "*) continue;; esac
  rm -rf -- "$r" && echo "$r"
done
"""
    with ctx.step(f"prune releases (keep {keep})") as note:
        pruned = ctx.each(lambda h: _sh(h, script, "pruning releases"), "prune")
        names = sorted({v for out in pruned.values() for v in out.split()})
        if names:
            note.append("removed " + ", ".join(names))


def slot_link_version(link_target: str) -> str | None:
    return posixpath.basename(link_target.rstrip("/")) or None
