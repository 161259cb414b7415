"""The rehearsal's steps: what bg runs, in order, and the exit code each must give."""

from __future__ import annotations

from dataclasses import dataclass

from bluegreen.errors import ExitCode
from bluegreen.rehearse import apps

CANARY_PERCENT = 20


@dataclass(frozen=True)
class Step:
    name: str
    args: tuple[str, ...]
    expect: int
    refused: bool = False  # runs with the refused-release config
    under_load: bool = True
    verify: bool = False  # runs with the config that has a verification window
    # Failures of this kind during the step are the point of it (the failing release's
    # 500s before bg undoes it): reported apart, not counted as failed requests.
    tolerated: str = ""


def steps_for(plan: apps.AppPlan) -> list[Step]:
    def deploy(release: apps.Release) -> tuple[str, ...]:
        extra = ("--version", release.version) if release.version else ()
        return ("deploy", str(release.artifact), *extra)

    def label(release: apps.Release) -> str:
        return apps.version_of(release, plan.name) or release.artifact.name

    return [
        # Nothing is live before the first deploy, so the load starts once A serves.
        Step(f"deploy A ({label(plan.a)})", deploy(plan.a), ExitCode.OK, under_load=False),
        Step(f"deploy B ({label(plan.b)})", deploy(plan.b), ExitCode.OK),
        Step(f"refused ({label(plan.refused)})", deploy(plan.refused), ExitCode.HEALTH,
             refused=True),
        *([Step(f"undone ({label(plan.failing)}, {apps.FAILING_SHARE:.0%} fail)",
                deploy(plan.failing), ExitCode.VERIFY, verify=True, tolerated="HTTP 500")]
          if plan.failing else []),
        *([Step(f"canary ({label(plan.canary)}, {CANARY_PERCENT}%)",
                ("deploy", "--canary", str(CANARY_PERCENT), str(plan.canary.artifact)),
                ExitCode.OK),
           Step("abort the canary", ("abort",), ExitCode.OK)] if plan.canary else []),
        Step("rollback", ("rollback",), ExitCode.OK),
        Step("switch", ("switch",), ExitCode.OK),
    ]
