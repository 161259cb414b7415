"""Speed of bg itself, each figure beside its floor, from one run (issues 11 and 23).

    python bench/speed.py [--runs 7] [--ssh] [--elixir] [--fleet] [--out bench/out]

Two columns (bench/speed_local.py): ``stock``, the default, is a user's config
(``pid_file`` at its default, so nginx's master is found through ``nginx -T``, and
``probe_url`` through the site); ``tuned`` sets ``pid_file`` (issue 11's shape).
Figures (median of --runs, at least 7; each run beside its floor, in turn):
  start-up     `bg --version`                 vs `python -c pass`
  status       `bg status`, local target       vs `python -c pass`
  switch       `bg switch` to a warm slot      vs the same switch by hand (rewrite the
               (local, private nginx)             upstream file, nginx -t, reload, one probe)
  deploy       `bg deploy` wall - app boot     vs the app's own boot (spawn -> first 200)
  deploy-ssh   `bg deploy` to one sandbox host vs one SSH round trip (--ssh; root)
  commands     commands per host for a deploy (`bg -v` prints them; each is a round trip
               over SSH)
  elixir       `bg deploy` of a real `mix release`,    vs the release's own graceful stop
               wall - the release's own boot          (SIGTERM -> exit; --elixir; builds
                                                      --runs releases, offline)
  fleet        `bg deploy` to 16 sandbox hosts             vs the same deploy to 1 host
               (--fleet; root; bench/deploy_hosts.py with sizes 1 and 16)
bluegreen's modules are byte-compiled first and PYTHONDONTWRITEBYTECODE is dropped, as
for an installed bg (pip compiles on install): compiling the sources on every run would
be measured otherwise. Writes <out>/speed.json. Everything runs on 127.0.0.1 or inside
the sandbox's namespaces.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bluegreen.config import load
from bluegreen.sandbox.sample import build_sample

from speed_local import ENV, REPO, SHAPES, bg, log, measure_shapes, run, wall

# Issue 23's targets (stock column); the tuned column is held to the same.
TARGETS = {"version": 0.05, "status": 0.12, "switch": 0.2, "switch_ratio": 8.0,
           "deploy": 0.4, "deploy_ssh": 0.6, "commands": 4, "elixir": 1.0, "fleet": 2.0}


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def app_boot(workdir: Path, runs: int) -> list[float]:
    """Spawn the sample app and wait for its first 200 on /health, ``runs`` times."""
    from deploy_hosts import app_boot_samples

    return app_boot_samples(workdir, runs, every=0.002)


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    n = args.runs
    out: dict[str, Any] = {"runs": n, "python_pass_s": [], "version_s": []}
    for _ in range(n):  # in turn, so that both see the same machine
        out["version_s"].append(wall(lambda: run(sys.executable, "-m", "bluegreen",
                                                 "--version")))
        out["python_pass_s"].append(wall(lambda: run(sys.executable, "-c", "pass")))
    log(f"start-up: python {median(out['python_pass_s']):.3f} s,"
        f" bg --version {median(out['version_s']):.3f} s")
    out["app_boot_s"] = app_boot(workdir, n)
    log(f"app boot {median(out['app_boot_s']):.3f} s")
    out["shapes"] = measure_shapes(n, workdir)
    if args.ssh:
        out.update(measure_ssh(n, workdir))
    if args.elixir:
        out.update(measure_elixir(n, workdir))
    if args.fleet:
        out.update(measure_fleet(n, workdir))
    if args.controller_cpu:
        out.update(measure_controller_cpu(args, workdir))
    return out


def measure_elixir(n: int, workdir: Path) -> dict[str, Any]:
    """Deploys of a real `mix release` (a new version each time: upload, extract, boot,
    switch, retire), beside the release's own boot time."""
    from stand import Stand, elixir_app

    stand = Stand(elixir_app(), workdir / "elixir")
    if stand.prepare(log) != 0:
        raise SystemExit("the Elixir stand could not be prepared")
    walls = []
    with stand.serving():
        if not stand.first_deploys():
            raise SystemExit("the first Elixir deploy failed")
        for i in range(n):
            code, data, started, ended = stand.bg("deploy", str(stand.artifact(f"3.{i}.0")))
            if code:
                raise SystemExit(f"Elixir deploy failed: {data}")
            walls.append(ended - started)
    log(f"elixir boot {median(stand.boot_idle):.3f} s, stop {median(stand.stop_idle):.3f} s,"
        f" deploy {median(walls):.3f} s")
    return {"elixir_boot_s": stand.boot_idle, "elixir_stop_s": stand.stop_idle,
            "elixir_deploy_s": walls}


def measure_fleet(n: int, workdir: Path) -> dict[str, Any]:
    from deploy_hosts import measure as deploy_hosts

    one, sixteen = deploy_hosts([1, 16], n, workdir / "fleet")
    log(f"fleet: 1 host {one['deploy_wall_median_s']:.2f} s,"
        f" 16 hosts {sixteen['deploy_wall_median_s']:.2f} s")
    return {"fleet_1_s": one["deploy_wall_s"], "fleet_16_s": sixteen["deploy_wall_s"]}


def measure_ssh(n: int, workdir: Path) -> dict[str, Any]:
    from bluegreen.ops.core import open_hosts
    from bluegreen.sandbox.config import sandbox_config
    from bluegreen.sandbox.hosts import Sandbox, require_root_or_skip_reason

    reason = require_root_or_skip_reason()
    if reason:
        print(f"skipping SSH figures: {reason}", file=sys.stderr)
        return {}
    with Sandbox(workdir / "sandbox", 1) as sandbox:
        config = sandbox_config(sandbox, workdir / "bluegreen-ssh.toml", parallel=1)
        env = {**ENV, "HOME": str(config.parent)}
        env.pop("SSH_AUTH_SOCK", None)
        art = workdir / "art-ssh"
        bg(config, "setup", env=env)
        bg(config, "deploy", str(build_sample(art, "1.0.0")), env=env)
        deploys, commands = [], []
        for i in range(n):
            started = time.perf_counter()
            doc = json.loads(bg(config, "--json", "deploy", str(build_sample(art, f"1.{i + 1}.0")),
                                env=env).stdout)
            deploys.append(time.perf_counter() - started)
            commands.append(doc["result"]["hosts"][0]["commands"])
        cfg = load(config)
        (host,) = open_hosts(cfg, cfg.target(None))
        try:
            connect = wall(lambda: host.run("true"))
            trips = [wall(lambda: host.run("true")) for _ in range(n)]
        finally:
            host.close()
        return {"deploy_ssh_s": deploys, "deploy_ssh_commands": commands,
                "ssh_connect_and_first_command_s": connect, "ssh_round_trip_s": trips}


# ------------------------------------------------------------------------------------
# Controller CPU per host (issue 23, the SSH part): bg's own CPU in a deploy to 1, 4, 16
# and 64 sandbox hosts (bench/controller_cpu.py); `--controller-cpu` runs it,
# `controller_cpu_rows` prints its table under the main one.


def measure_controller_cpu(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Samples for the per-host controller CPU table (key ``controller_cpu``)."""
    import controller_cpu

    (workdir / "controller-cpu").mkdir(exist_ok=True)
    return {"controller_cpu": controller_cpu.measure(workdir / "controller-cpu")}


def controller_cpu_rows(m: dict[str, Any]) -> list[str]:
    """The per-host controller CPU table's lines, printed after the main table."""
    if "controller_cpu" not in m:
        return []
    import controller_cpu

    return ["", "controller CPU per host (bg's own user+sys, parallel = 16):",
            *controller_cpu.table(m["controller_cpu"])]


# ------------------------------------------------------------------------------------
# The table: each figure in both columns, beside its floor.


def _row(figure: str, values: dict[str, float], floor_name: str, floors: dict[str, float],
         target: float | str, met: bool) -> dict[str, Any]:
    return {"figure": figure, "value": values["stock"], "values": values,
            "floor_name": floor_name, "floor": floors["stock"], "floors": floors,
            "ratio": values["stock"] / floors["stock"],
            "ratios": {k: values[k] / floors[k] for k in values}, "target": target,
            "met": met}


def report(m: dict[str, Any]) -> list[dict[str, Any]]:
    boot = median(m["app_boot_s"])
    sh = m["shapes"]

    def per(key: str) -> dict[str, float]:
        return {s: median(sh[s][key]) for s in SHAPES}

    def ratio(key: str, floor: str) -> dict[str, float]:  # pair by pair, then the median
        return {s: median([a / b for a, b in zip(sh[s][key], sh[s][floor], strict=True)])
                for s in SHAPES}

    py = median(m["python_pass_s"])
    version = median(m["version_s"])
    status, switch, hand = per("status_s"), per("switch_s"), per("switch_by_hand_s")
    switch_ratio = ratio("switch_s", "switch_by_hand_s")
    deploy = {s: v - boot for s, v in per("deploy_local_s").items()}
    commands = {s: float(median(sh[s]["deploy_local_commands"])) for s in SHAPES}
    rows = [
        _row("bg --version", {s: version for s in SHAPES}, "python -c pass",
             {s: py for s in SHAPES}, TARGETS["version"], version <= TARGETS["version"]),
        _row("bg status (local)", status, "python -c pass", per("status_floor_s"),
             TARGETS["status"], status["stock"] <= TARGETS["status"]),
        _row("bg switch, warm slot (local)", switch, "by hand", hand,
             f"{TARGETS['switch']:g} s/{TARGETS['switch_ratio']:g}x",
             switch["stock"] <= TARGETS["switch"]
             and switch_ratio["stock"] <= TARGETS["switch_ratio"]),
        _row("bg deploy - app boot (local)", deploy, "app boot", {s: boot for s in SHAPES},
             TARGETS["deploy"], deploy["stock"] <= TARGETS["deploy"]),
        _row("commands per host, deploy (local)", commands, "1 command",
             {s: 1.0 for s in SHAPES}, TARGETS["commands"],
             commands["stock"] <= TARGETS["commands"]),
    ]
    rows[2]["ratios"] = switch_ratio  # the pairwise median, steadier than median/median
    rows[2]["ratio"] = switch_ratio["stock"]
    return rows + other_rows(m, boot)


def other_rows(m: dict[str, Any], boot: float) -> list[dict[str, Any]]:
    """The SSH, Elixir and fleet figures: one column (they do not depend on the shape)."""
    rows = []
    if "deploy_ssh_s" in m:
        rows += [
            ("bg deploy - app boot (1 SSH host)", median(m["deploy_ssh_s"]) - boot,
             "SSH round trip", median(m["ssh_round_trip_s"]), TARGETS["deploy_ssh"]),
            ("SSH round trips per host, deploy", float(median(m["deploy_ssh_commands"])),
             "1 round trip", 1.0, TARGETS["commands"]),
        ]
    if "elixir_deploy_s" in m:
        # A deploy boots the new release and waits for the old one to stop (retire is
        # synchronous), so the floor of deploy - boot is the release's own graceful stop:
        # OTP <= 25 sleeps 1 s in it (user_sup:terminate/2).
        eboot = median(m["elixir_boot_s"])
        rows.append(("Elixir deploy - release boot", median(m["elixir_deploy_s"]) - eboot,
                     "release stop", median(m["elixir_stop_s"]), TARGETS["elixir"]))
    out = [{"figure": f, "value": v, "floor_name": fn, "floor": fl, "ratio": v / fl,
            "target": t, "met": v <= t} for f, v, fn, fl, t in rows]
    if "fleet_16_s" in m:  # its target is a ratio: 16 hosts within 2x the time of 1 host
        one, sixteen = median(m["fleet_1_s"]), median(m["fleet_16_s"])
        out.append({"figure": "bg deploy, 16 SSH hosts", "value": sixteen,
                    "floor_name": "1 host", "floor": one, "ratio": sixteen / one,
                    "target": f"{TARGETS['fleet']:g}x", "met": sixteen / one <= TARGETS["fleet"]})
    return out


def _cell(r: dict[str, Any], shape: str | None) -> str:
    unit = "" if any(w in r["figure"] for w in ("commands", "trips", "/")) else " s"
    if shape is None:
        floor = f"{r['floor_name']} {r['floor']:.3f}"
        return f"{r['value']:>7.3f}{unit:2} {floor:>20} {r['ratio']:>6.1f}x"
    floor = f"{r['floor_name']} {r['floors'][shape]:.3f}"
    return f"{r['values'][shape]:>7.3f}{unit:2} {floor:>20} {r['ratios'][shape]:>6.1f}x"


def print_table(rows: list[dict[str, Any]]) -> None:
    cols = " | ".join(f"{s + ' (value, floor, ratio)':^39}" for s in SHAPES)
    print(f"{'figure':<34} {cols} {'target':>10}")
    for r in rows:
        cells = (" | ".join(_cell(r, s) for s in SHAPES) if "values" in r
                 else _cell(r, None))
        print(f"{r['figure']:<34} {cells} {r['target']!s:>10}{'' if r['met'] else ' MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--ssh", action="store_true", help="also one sandbox host (root)")
    parser.add_argument("--elixir", action="store_true", help="also a real mix release")
    parser.add_argument("--fleet", action="store_true", help="also 16 sandbox hosts (root)")
    parser.add_argument("--controller-cpu", action="store_true",
                        help="also bg's CPU per host for 1, 4, 16 and 64 hosts (root)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    args.runs = max(7, args.runs)
    # What `pip install` does: bytecode on disk, not a compile of every module per run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "bluegreen")],
                   check=True, capture_output=True)
    with tempfile.TemporaryDirectory(prefix="bg-speed-") as tmp:
        m = measure(args, Path(tmp))
    rows = report(m)
    print_table(rows)
    for line in controller_cpu_rows(m):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps({"figures": rows, "samples": m}, indent=2))
    print(f"wrote {args.out / 'speed.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
