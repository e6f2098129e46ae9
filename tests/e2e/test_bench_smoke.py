"""The benchmark harness at smoke size: every workload must still produce its figures.

Times are not asserted (CI machines vary); this only keeps `make bench`
from rotting. Needs a Postgres server (WEIR_TEST_DATABASE_URL).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ENV, REPO

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W7")


@pytest.mark.timeout(300)
def test_smoke_produces_a_figure_for_every_workload(tmp_path: Path) -> None:
    admin = os.environ.get(PG_ENV)
    if not admin:
        pytest.skip(f"the benchmark smoke run needs {PG_ENV} (e.g. postgresql://postgres@127.0.0.1/postgres)")
    figures, report = tmp_path / "figures.json", tmp_path / "RESULTS.md"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--smoke",
            "--json",
            str(figures),
            "--output",
            str(report),
            "--pg",
            admin,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, (
        f"python -m bench --smoke failed:\n{done.stdout[-6000:]}\n{done.stderr[-3000:]}"
    )

    results = json.loads(figures.read_text())
    assert sorted(results) == list(WORKLOADS)
    for workload, cases in results.items():
        assert cases, f"{workload} ran no case"
        for name, case in cases.items():
            assert not case["errors"], f"{workload} {name}: {case['errors']}"
            missing = [key for key, figure in case["figures"].items() if figure is None]
            assert not missing, f"{workload} {name}: no figure for {missing}"
    text = report.read_text()
    for workload in WORKLOADS:
        assert f"## {workload} " in text
    # The smoke run never overwrites the committed results.
    assert (
        not (REPO / "bench" / "RESULTS.md").exists()
        or "smoke size" not in (REPO / "bench" / "RESULTS.md").read_text()
    )
