"""Issue 18's smaller cases, unit tier: the summary's total, status during an operation,
history per operation, pruning by what was live, and `bg check` on a stopped nginx."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bluegreen.ops import deploy as ops
from bluegreen.ops.core import OperationResult
from tests.fakes import deployed, fleet, make_artifact, make_config

pytestmark = pytest.mark.unit


def test_the_reported_total_includes_the_artifact_check(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from bluegreen import artifact

    real = artifact.inspect

    def slow(*args: object, **kwargs: object) -> artifact.Artifact:
        time.sleep(0.4)  # a large release: reading and hashing it takes a while
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(artifact, "inspect", slow)
    cfg = make_config()
    ctx, _ = fleet(cfg, state=deployed("1.0.0", "blue"), alive=("blue",))
    result = ops.deploy(ctx, make_artifact(tmp_path, "2.0.0"))
    assert isinstance(result, OperationResult)
    steps = sum(s.seconds for s in result.steps)
    assert result.steps[0].title == "check artifact" and result.steps[0].seconds >= 0.4
    assert result.seconds >= steps, (result.seconds, steps)
    assert f"in {result.seconds:.2f}s" in result.summary
