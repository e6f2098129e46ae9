"""The committed stubs in sdk/weir/v1 are exactly what `make proto` generates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.conftest import REPO


def test_committed_stubs_match_the_protos(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "scripts" / "gen_proto.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(tmp_path)
    fresh = tmp_path / "weir" / "v1"
    committed = REPO / "sdk" / "weir" / "v1"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == sorted(p.name for p in committed.iterdir() if p.name != "__pycache__")
    stale = [n for n in names if (fresh / n).read_bytes() != (committed / n).read_bytes()]
    assert not stale, f"stubs are stale, run `make proto`: {stale}"
