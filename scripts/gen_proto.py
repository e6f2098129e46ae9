"""Generate Python stubs from proto/ into sdk/weir/v1 (`make proto`).

The output is committed. tests/unit/test_proto_stubs.py regenerates into a
temporary folder and fails when the committed files differ, so edit the
.proto files and run `make proto`; never edit the output by hand.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE = Path("weir") / "v1"
DEFAULT_OUT = ROOT / "sdk"

INIT = '''"""Generated gRPC stubs of Weir's wire contract (proto/weir/v1). Do not edit: run `make proto`."""
'''


def generate(out_root: Path) -> list[Path]:
    """Write the stubs under out_root/weir/v1 and return the files written."""
    from grpc_tools import protoc  # dev dependency, imported late on purpose

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in (PROTO_ROOT / PACKAGE).glob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    bindir = Path(sys.executable).parent  # mypy-protobuf's plugins sit beside the interpreter
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{include}",
            f"--plugin=protoc-gen-mypy={bindir / 'protoc-gen-mypy'}",
            f"--plugin=protoc-gen-mypy_grpc={bindir / 'protoc-gen-mypy_grpc'}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            f"--mypy_out={tmp}",
            f"--mypy_grpc_out={tmp}",
            *protos,
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        target = out_root / PACKAGE
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        written = []
        for src in sorted((Path(tmp) / PACKAGE).iterdir()):
            dst = target / src.name
            shutil.copyfile(src, dst)
            written.append(dst)
        init = target / "__init__.py"
        init.write_text(INIT)
        (target / "py.typed").write_text("")
        return [init, target / "py.typed", *written]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="root folder for weir/v1")
    ns = parser.parse_args()
    files = generate(ns.out)
    print(f"generated {len(files)} files in {ns.out / PACKAGE}", file=sys.stderr)


if __name__ == "__main__":
    main()
