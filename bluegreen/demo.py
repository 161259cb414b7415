"""`bg demo`: the rehearsal on this machine with the sample app (`bg rehearse --local`).

A private nginx on 127.0.0.1, the sample app, and deploy v1, deploy v2, a broken v3 (refused
by the health gate), rollback and switch while clients keep requesting through nginx; then
what each operation cost and whether any request failed. Nothing outside ``workdir`` is
touched; it stays afterwards (state, journal, bg.log, the plot) for reading.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def run_demo(workdir: Path, *, port: int = 18080, keep: bool = False) -> int:
    from bluegreen.errors import BgError
    from bluegreen.rehearse.envs import LocalEnv
    from bluegreen.rehearse.run import Options, Rehearsal

    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    opts = Options(app="sample", keep=keep, workdir=workdir, out=workdir)
    try:
        code = Rehearsal(LocalEnv(listen_port=port), "bg demo", opts).run()
    except BgError as exc:
        print(f"error: {exc.message}")
        for extra in (exc.detail, exc.hint):
            if extra:
                print(f"  {extra}")
        return int(exc.exit_code)
    print(f"state, journal and bg's output: {workdir}")
    return code
