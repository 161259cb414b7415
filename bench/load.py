"""Zero downtime, measured: HTTP load through nginx while bg deploys, switches and rolls back.

Run: ``python bench/load.py [--ops 30] [--out bench/out] [--app sample|elixir]
[--seconds-per-op 2.0]`` (as root or not; needs nginx, numpy and matplotlib).

What happens, in one run, under one sustained load (``loadgen``: three client mixes, each
in its own process, every request one record):

1. The stand (``stand``): a private nginx on 127.0.0.1 in front of a bg workspace with two
   slots; ``bg setup`` and ``bg deploy`` of v1 before the load starts.
2. **bg**: ``--ops`` operations cycling ``deploy vN`` / ``switch`` / ``rollback``. Cycles
   alternate between the default (the old slot is retired after nginx's old workers drained,
   so the next switch and rollback start that slot again: *cold*) and ``--keep-old`` (both
   slots stay up, so switch and rollback are a bare nginx switch: *warm*). Every operation
   is ``bg --json ...`` in a subprocess; its wall time and its JSON steps are kept.
3. The baselines (``baselines``): as many bare ``nginx -s reload`` as bg reloaded nginx, then
   ``--traditional`` stop/start deploys of one release on one fixed port.

Every request is attributed to the window (operation or pause) in which it started
(``windows``); ``report`` writes the tables and targets, ``plot`` the picture.
``--keepalive-ab N`` instead compares a bare reload and a warm ``bg switch`` head to head,
alternating, with keep-alive clients only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # `python bench/load.py` from a checkout
    sys.path.insert(0, ROOT)

from baselines import bare_reloads, stop_starts  # noqa: E402
from loadgen import HARD_LIMIT, MIX_TITLES, MIXES, LoadGenerator  # noqa: E402
from report import replot, write_keepalive_ab, write_run  # noqa: E402
from stand import REPO, Stand, elixir_app, sample_app  # noqa: E402
from windows import Timeline, pace  # noqa: E402

AB_CONNS, AB_RATE = 8, 200.0  # keep-alive A/B: more requests, hence more reload races


def log(text: str) -> None:
    print(text, flush=True)


def bg_operations(stand: Stand, timeline: Timeline, args: argparse.Namespace) -> int:
    """``args.ops`` bg operations, cold and warm cycles in turn; returns the reloads done."""
    version = 1
    reloads = 0
    for i in range(args.ops):
        cycle, step = divmod(i, 3)
        warm = cycle % 2 == 1
        extra = ["--keep-old"] if warm else []
        how = "warm" if warm else "cold"
        if step == 0:
            version += 1
            ver = f"{version}.0.0"
            argv = ["deploy", str(stand.artifact(ver)), *extra]
            label, kind = f"deploy {ver}" + (" (keep old)" if warm else ""), "deploy"
        elif step == 1:
            argv, label, kind = ["switch", *extra], f"switch ({how})", f"switch {how}"
        else:
            argv, label, kind = ["rollback", *extra], f"rollback ({how})", f"rollback {how}"
        code, data, started, ended = stand.bg(*argv)
        timeline.mark(label, kind, "bg", started, ended, code, bg=data)
        if code == 0:
            reloads += 1
        log(f"  {i + 1:3}/{args.ops} bg {label:<26} exit {code}  {ended - started:6.2f}s")
        pace(started, args.seconds_per_op, args.settle)
    return reloads


def run(stand: Stand, args: argparse.Namespace, out: Path) -> int:
    """bg's operations, then the two baselines, under one load; then the report."""
    if code := stand.prepare(log):
        return code
    out.mkdir(parents=True, exist_ok=True)
    timeline = Timeline()
    boots: list[float] = []
    with stand.serving():
        if not stand.first_deploys():
            return 1
        for v in range(2, 2 + args.ops // 3 + 1):  # build before the clock runs
            stand.artifact(f"{v}.0.0")
        budget = (args.ops * 2 + args.traditional + 30) * max(args.seconds_per_op, 3.0) + 120
        with LoadGenerator(stand.listen, stand.workdir, conns=args.conns, rate=args.rate,
                           limit=min(budget, HARD_LIMIT)) as load:
            timeline.origin = time.monotonic()
            log(f"load: 3 mixes x {args.conns} connections x {args.rate:g}/s each"
                " (0 = unpaced)")
            timeline.idle("warm-up", 2.0)
            log(f"bg: {args.ops} operations")
            reloads = bg_operations(stand, timeline, args)
            bg_windows = [w for w in timeline.windows if w.phase == "bg"]
            spacing = min(max(statistics.median(w.wall for w in bg_windows) + args.settle,
                              args.seconds_per_op), 5.0) if bg_windows else 2.0
            timeline.idle("pause", 1.0)
            log(f"baseline 1: {reloads} bare nginx reloads, one every {spacing:.2f}s")
            bare_reloads(stand, timeline, reloads, spacing=spacing, settle=args.settle,
                         log=log)
            log(f"baseline 2: {args.traditional} traditional stop/start deploys on"
                f" :{stand.single}")
            boots = stop_starts(stand, timeline, args.traditional, spacing=spacing,
                                settle=args.settle, log=log)
            timeline.idle("cool-down", 1.0)
            timeline.close()
    settings = {
        "app": stand.app.name,
        "ops": args.ops,
        "traditional": args.traditional,
        "seconds_per_op": args.seconds_per_op,
        "load": {"connections_per_mix": args.conns, "rate_per_connection": args.rate,
                 "mixes": {m.name: MIX_TITLES[m.name] for m in MIXES}},
    }
    return write_run(out, load, timeline, settings=settings, boot_idle=stand.boot_idle,
                     boots=boots)


def keepalive_ab(stand: Stand, args: argparse.Namespace, out: Path) -> int:
    """Keep-alive clients only, at a higher rate: a bare reload and a warm `bg switch`,
    alternately, ``args.keepalive_ab`` times each, so both see the same machine at the same
    time.

    In the main run keep-alive failures are rare (a few per 30 reloads), too few to
    compare bg with the baseline; this gives each side tens of them.
    """
    pairs = args.keepalive_ab
    if code := stand.prepare(log):
        return code
    out.mkdir(parents=True, exist_ok=True)
    spans: dict[str, list[tuple[float, float]]] = {"bare reload": [], "bg switch": []}
    walls: dict[str, list[float]] = {"bare reload": [], "bg switch": []}
    exits: list[int] = []
    with stand.serving():
        if not stand.first_deploys(("deploy", str(stand.artifact("2.0.0")), "--keep-old")):
            return 1
        mixes = [m for m in MIXES if m.name == "keepalive"]
        with LoadGenerator(stand.listen, stand.workdir, conns=AB_CONNS, rate=AB_RATE,
                           limit=min(pairs * 2 * 5.0 + 60, HARD_LIMIT), mixes=mixes) as load:
            log(f"keep-alive A/B: {pairs} x (bare reload, bg switch --keep-old),"
                f" {AB_CONNS} keep-alive connections x {AB_RATE:g}/s")
            time.sleep(1.5)
            reload_argv = stand.nginx.argv("-s", "reload")
            for i in range(pairs):
                for kind in ("bare reload", "bg switch"):
                    started = time.monotonic()
                    if kind == "bare reload":
                        subprocess.run(reload_argv, capture_output=True, check=False,
                                       timeout=30)
                        ended = time.monotonic()
                    else:
                        code, _, started, ended = stand.bg("switch", "--keep-old")
                        exits.append(code)
                    walls[kind].append(ended - started)
                    pace(started, args.seconds_per_op, args.settle)
                    spans[kind].append((started, time.monotonic()))
                if (i + 1) % 10 == 0 or i + 1 == pairs:
                    log(f"  {i + 1:3}/{pairs}")
    return write_keepalive_ab(out, load, pairs=pairs, conns=AB_CONNS, rate=AB_RATE,
                              spans=spans, walls=walls, exits=exits)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--ops", type=int, default=30, help="bg operations (default 30)")
    p.add_argument("--out", default=str(REPO / "bench" / "out"), help="output directory")
    p.add_argument("--app", choices=("sample", "elixir"), default="sample")
    p.add_argument("--seconds-per-op", type=float, default=2.0,
                   help="minimum window per operation, seconds (default 2)")
    p.add_argument("--settle", type=float, default=0.5,
                   help="pause after each operation, seconds (default 0.5)")
    p.add_argument("--traditional", type=int, default=5,
                   help="stop/start deploys in the traditional baseline (default 5)")
    p.add_argument("--conns", type=int, default=4, help="connections per mix (default 4)")
    p.add_argument("--rate", type=float, default=100.0,
                   help="requests/s per connection, 0 = unpaced (default 100)")
    p.add_argument("--workdir", default=None, help="working directory (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the working directory")
    p.add_argument("--keepalive-ab", type=int, default=0, metavar="N",
                   help="instead of the run: N bare reloads and N warm `bg switch`,"
                        " alternating, under keep-alive load only")
    p.add_argument("--replot", action="store_true",
                   help="only render load.md and load.png again from the files in --out")
    args = p.parse_args(argv)
    if args.ops < 1 or args.ops > 300:
        p.error("--ops must be between 1 and 300")
    if not 0 < args.conns <= 64:
        p.error("--conns must be between 1 and 64")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    if args.replot:
        return replot(out)
    app = elixir_app() if args.app == "elixir" else sample_app()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bg-load-")).resolve()
    stand = Stand(app, workdir)
    try:
        return keepalive_ab(stand, args, out) if args.keepalive_ab else run(stand, args, out)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
