"""The fault runner's smoke run (`python -m bench.chaos --smoke`) passes: faults lose nothing.

It starts its own NATS, PostgreSQL, services and sink, injects the smoke scenarios' faults under
load, and exits non-zero on any loss, stuck message, unexpected duplicate or INTERNAL/UNKNOWN
answer; its table says which. Nothing here waits on a timer: the runner's own bounds decide.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(900)
def test_chaos_smoke_run_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos-smoke.md"
    done = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--smoke", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr[-4000:]}"
    report = out.read_text()
    assert "**Every scenario passed.**" in report, report
    # Every smoke scenario ran and has a row.
    from bench.chaos import SMOKE_NAMES

    for name in SMOKE_NAMES:
        assert f"| {name} |" in report, report
