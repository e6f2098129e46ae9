"""Import DAG files from a folder and collect the DAGs they define.

Used by workers, `weir dags deploy|test|list --local` and the task runner
processes. One broken file does not hide the others: its error is reported
with the file name and the line that failed.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from weir.dag import DAG, collect_dags
from weir.errors import DagDefinitionError


@dataclass
class DagBag:
    """The DAGs found in a folder, and the files that failed to load."""

    folder: Path
    dags: dict[str, DAG] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def get(self, dag_id: str) -> DAG:
        try:
            return self.dags[dag_id]
        except KeyError:
            known = ", ".join(sorted(self.dags)) or "none"
            raise KeyError(f"no DAG {dag_id!r} in {self.folder} (found: {known})") from None


def dag_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    return sorted(
        p
        for p in folder.rglob("*.py")
        if not any(part.startswith((".", "_")) for part in p.relative_to(folder).parts)
    )


def load_folder(folder: Path | str) -> DagBag:
    """Import every DAG file under `folder` (files and folders starting with _ or . are skipped)."""
    root = Path(folder).expanduser().resolve()
    bag = DagBag(folder=root)
    if not root.exists():
        bag.errors[str(root)] = f"DAG folder {root} does not exist"
        return bag
    # DAG files may import helpers that sit beside them, as in Airflow.
    base = root if root.is_dir() else root.parent
    if str(base) not in sys.path:
        sys.path.insert(0, str(base))
    owner: dict[str, Path] = {}
    for path in dag_files(root):
        try:
            found = _import(path)
        except Exception as exc:
            bag.errors[str(path)] = _describe(exc, path)
            continue
        for d in found:
            try:
                d.validate()
            except DagDefinitionError as exc:
                bag.errors[str(path)] = str(exc)
                continue
            if d.dag_id in owner and owner[d.dag_id] != path:
                bag.errors[str(path)] = f"DAG {d.dag_id!r} is also defined in {owner[d.dag_id]}"
                continue
            owner[d.dag_id] = path
            bag.dags[d.dag_id] = d
    return bag


def _import(path: Path) -> list[DAG]:
    # A name unique to the file's path (crc32: hashlib would load OpenSSL, ~4 MiB, into every runner).
    digest = f"{zlib.crc32(str(path).encode()):08x}"
    name = f"weir_dags_{digest}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    with collect_dags() as found:
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    return found


def _describe(exc: BaseException, path: Path) -> str:
    """The error and the deepest line of the DAG file involved."""
    if isinstance(exc, DagDefinitionError):
        where = ""
        for frame in reversed(traceback.extract_tb(exc.__traceback__)):
            if frame.filename == str(path):
                where = f" (line {frame.lineno})"
                break
        return f"{exc}{where}"
    return "".join(traceback.format_exception(exc)).rstrip()
