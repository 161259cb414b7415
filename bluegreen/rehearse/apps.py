"""What a rehearsal deploys: the sample app, the Elixir sample, or the user's own releases.

Each gives the app's config (as a TOML table, before the environment redirects root, ports
and nginx), releases A and B, and a release that must be refused by the health gate.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluegreen.artifact import version_from_name
from bluegreen.config import CONFIG_NAME
from bluegreen.rehearse.envs import Prepared, RehearsalError
from bluegreen.tomlwriter import dumps

# A path no app serves: the refused release of the user's app is B health-gated on it.
REFUSED_HEALTH_PATH = "/bg-rehearsal/refused-on-purpose"
REFUSED_EXPECT = 599
REFUSED_DEADLINE = 3.0  # seconds the health gate waits for the release that must be refused


@dataclass(frozen=True)
class Release:
    artifact: Path
    version: str | None = None  # passed as --version when the file name does not say it


@dataclass
class AppPlan:
    title: str
    raw: dict[str, Any]  # the config, before redirection
    a: Release
    b: Release
    refused: Release
    # How the refused release fails: its own /health, or the config's health path changed.
    refused_health_path: str | None = None
    notes: list[str] = field(default_factory=list)
    # A release whose health passes while part of its real requests fail: bg must undo it
    # in its verification window (the sample app only: it can be told to fail).
    failing: Release | None = None
    websockets: bool = False  # its releases serve /ws (the sample app): sockets are held too
    canary: Release | None = None  # deployed as a canary, then aborted (the sample app)

    @property
    def name(self) -> str:
        return str(self.raw["app"]["name"])


FAILING_SHARE = 0.3  # of the failing release's GET /
# The window of the step that deploys it: short, and sure of its verdict under the load.
VERIFY = {"window": 6.0, "min_requests": 20, "max_error_rate": 0.05, "interval": 0.5}


def _fast_health() -> dict[str, Any]:
    return {"interval": 0.1, "timeout": 1.0, "deadline": 15.0}


def sample(workdir: Path) -> AppPlan:
    from bluegreen.sandbox.sample import build_sample

    arts = workdir / "artifacts"
    env = workdir / "sample.env"
    env.write_text("GREETING=hello\nREHEARSAL_SECRET=not-printed-anywhere\n")
    env.chmod(0o600)
    raw = {
        "app": {"name": "hello", "runner": "command", "command": "bin/server",
                "env_file": str(env), "keep_releases": 3, "stop_timeout": 10},
        "health": _fast_health(),
        "switch": {"drain_timeout": 10},
    }
    return AppPlan(
        title="the sample app", raw=raw,
        a=Release(build_sample(arts, "1.0.0")), b=Release(build_sample(arts, "2.0.0")),
        refused=Release(build_sample(arts, "3.0.0", health_status=500)), websockets=True,
        failing=Release(build_sample(arts, "4.0.0", fail_share=FAILING_SHARE)),
        canary=Release(build_sample(arts, "5.0.0")),
    )


def elixir(workdir: Path) -> AppPlan:
    from bluegreen.rehearse.elixir import build_release

    arts = workdir / "artifacts"
    raw = {
        "app": {"name": "hello", "runner": "elixir", "release_name": "hello",
                "keep_releases": 3, "stop_timeout": 20},
        "health": {**_fast_health(), "deadline": 60.0},
        "switch": {"drain_timeout": 10},
    }
    return AppPlan(
        title="the Elixir sample (mix release)", raw=raw,
        a=Release(build_release("1.0.0", arts)), b=Release(build_release("2.0.0", arts)),
        refused=Release(build_release("3.0.0", arts / "bad", health_status=500)),
    )


def user(artifacts: list[Path], config_path: Path | None) -> AppPlan:
    """The user's releases and config; relative files in it are made absolute."""
    if len(artifacts) > 2:
        raise RehearsalError(f"give one or two release tarballs, not {len(artifacts)}")
    for art in artifacts:
        if not art.is_file():
            raise RehearsalError(f"no such release tarball: {art}")
    path = (config_path or Path.cwd() / CONFIG_NAME).absolute()
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise RehearsalError(f"rehearsing your artifacts needs your config: no {path}",
                             hint="pass -c/--config PATH, or run `bg init` first") from exc
    except tomllib.TOMLDecodeError as exc:
        raise RehearsalError(f"{path}: not valid TOML: {exc}") from exc
    app = raw.get("app", {})
    for section, key in (("app", "env_file"), ("nginx", "template")):
        value = raw.get(section, {}).get(key)
        if isinstance(value, str) and value:
            p = Path(value).expanduser()
            raw[section][key] = str(p if p.is_absolute() else path.parent / p)
    a = Release(artifacts[0].absolute())
    if len(artifacts) == 2:
        b = Release(artifacts[1].absolute())
    else:
        version = version_from_name(a.artifact, str(app.get("name", "")))
        if version is None:
            raise RehearsalError(
                f"cannot tell the version of {a.artifact.name}",
                hint=f"name it {app.get('name', 'APP')}-VERSION.tar.gz, or give two tarballs")
        # One tarball: B is the same release under another version, so B is a real switch.
        b = Release(a.artifact, f"{version}-b")
    return AppPlan(
        title=f"your app {app.get('name', '?')} ({path})", raw=raw, a=a, b=b,
        refused=_refused(b, str(app.get("name", ""))),
        refused_health_path=REFUSED_HEALTH_PATH,
        notes=[f"the refused release: B health-gated on {REFUSED_HEALTH_PATH}"
               " (a path your app cannot answer)"],
    )


def _refused(b: Release, app: str) -> Release:
    """B under another version (B itself is live then, and deploying it again is a no-op)."""
    version = b.version or version_from_name(b.artifact, app)
    return Release(b.artifact, f"{version}-refused" if version else None)


def version_of(release: Release, app: str) -> str | None:
    return release.version or version_from_name(release.artifact, app)


def redirect(plan: AppPlan, env: Prepared, *, refused: bool = False,
             verify: bool = False) -> str:
    """The config as TOML, pointed at the environment (root, ports, nginx, target)."""
    raw = {section: dict(value) if isinstance(value, dict) else value
           for section, value in plan.raw.items()}
    raw["app"] = {**raw.get("app", {}), "root": env.root}
    if env.slots is not None:
        raw["slots"] = dict(env.slots)
    raw["nginx"] = {**raw.get("nginx", {}), **env.nginx}
    if env.health_floor:
        health = dict(raw.get("health", {}))
        for key, floor in env.health_floor.items():
            health[key] = max(float(health.get(key, floor)), floor)
        raw["health"] = health
    raw.pop("targets", None)
    if env.target is not None:
        raw["targets"] = {"rehearsal": env.target}
    if refused:
        health = dict(raw.get("health", {}))
        if plan.refused_health_path:
            health["path"] = plan.refused_health_path
            # No app answers 599, so even one that answers 200 on any path is refused.
            health["expect"] = REFUSED_EXPECT
        # The refusal is the point, not the wait: it is refused by the deadline either way.
        health["deadline"] = min(float(health.get("deadline", 60.0)), REFUSED_DEADLINE)
        raw["health"] = health
    if env.access_log:
        raw["verify"] = {**raw.get("verify", {}), "access_log": env.access_log}
    if verify:
        raw["verify"] = {**raw.get("verify", {}), **VERIFY}
    return dumps(raw)
