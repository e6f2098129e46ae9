"""Immutable facts cached in memory: compiled DAG versions, run identities and
which run and task each task instance handed to a worker belongs to.

A DAG version never changes once stored, and neither do a run's id, version,
logical date and conf; so the hot paths (claim, completion) read them from
here instead of the database. Entries load on first use, in the caller's
transaction.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from weir import _template
from weir.errors import NotFound
from weir.models import DagVersion
from weir.server.store import dag_runs, dags
from weir.spec import DagSpec, PythonCall, TaskSpec

K = TypeVar("K")
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class CompiledDag:
    """A DAG version with its graph precomputed for scheduling."""

    version: DagVersion
    spec: DagSpec
    tasks: dict[str, TaskSpec]
    upstream: dict[str, tuple[str, ...]]
    downstream: dict[str, tuple[str, ...]]
    #: task_id -> upstream task ids whose results its arguments use
    refs: dict[str, frozenset[str]]

    @property
    def version_id(self) -> int:
        return self.version.id


def compile_dag(version: DagVersion, spec: DagSpec) -> CompiledDag:
    tasks = {t.task_id: t for t in spec.tasks}
    downstream: dict[str, list[str]] = {t: [] for t in tasks}
    for t in spec.tasks:
        for up in t.upstream_task_ids:
            downstream[up].append(t.task_id)
    return CompiledDag(
        version=version,
        spec=spec,
        tasks=tasks,
        upstream={t.task_id: tuple(t.upstream_task_ids) for t in spec.tasks},
        downstream={k: tuple(v) for k, v in downstream.items()},
        refs={
            t.task_id: frozenset(_template.references(t.body.arguments))
            if isinstance(t.body, PythonCall)
            else frozenset()
            for t in spec.tasks
        },
    )


@dataclass(frozen=True, slots=True)
class RunInfo:
    pk: int
    run_id: str
    dag_id: str
    version_id: int
    logical_date: datetime
    #: DAG params overlaid with the run's conf
    params: dict[str, Any]


class _Lru(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: K, value: V) -> None:
        self.put_many([(key, value)])

    def put_many(self, items: Iterable[tuple[K, V]]) -> None:
        with self._lock:
            for key, value in items:
                self._data[key] = value
                self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)


class Catalog:
    def __init__(self, *, dag_versions: int = 512, runs: int = 20_000, tasks: int = 20_000) -> None:
        self._dags: _Lru[int, CompiledDag] = _Lru(dag_versions)
        self._runs: _Lru[int, RunInfo] = _Lru(runs)
        #: task instance id -> (run pk, task id), of instances this server handed out
        self._tasks: _Lru[int, tuple[int, str]] = _Lru(tasks)

    def dag(self, conn: Connection, version_id: int) -> CompiledDag:
        compiled = self._dags.get(version_id)
        if compiled is None:
            loaded = dags.load_version(conn, version_id)
            if loaded is None:
                raise NotFound(f"DAG version {version_id} does not exist")
            compiled = compile_dag(*loaded)
            self._dags.put(version_id, compiled)
        return compiled

    def learn(self, versions: Iterable[tuple[DagVersion, DagSpec]]) -> None:
        """Compile versions just registered (committed), unless already known."""
        for version, spec in versions:
            if self._dags.get(version.id) is None:
                self._dags.put(version.id, compile_dag(version, spec))

    def runs(self, conn: Connection, pks: Iterable[int]) -> dict[int, RunInfo]:
        found: dict[int, RunInfo] = {}
        missing = []
        for pk in set(pks):
            info = self._runs.get(pk)
            if info is None:
                missing.append(pk)
            else:
                found[pk] = info
        for row in dag_runs.get_many(conn, missing):
            info = self.run_info(conn, row)
            self._runs.put(row.pk, info)
            found[row.pk] = info
        return found

    def run_info(self, conn: Connection, row: dag_runs.RunRow) -> RunInfo:
        spec = self.dag(conn, row.version_id).spec
        return RunInfo(
            pk=row.pk,
            run_id=row.run_id,
            dag_id=row.dag_id,
            version_id=row.version_id,
            logical_date=row.logical_date,
            params={**spec.params, **row.conf},
        )

    def handed_out(self, instances: Iterable[tuple[int, int, str]]) -> None:
        """Note (task instance id, run pk, task id) of instances given to workers."""
        self._tasks.put_many((ti_id, (run_pk, task_id)) for ti_id, run_pk, task_id in instances)

    def task_of(self, ti_id: int) -> tuple[int, str] | None:
        """(run pk, task id) of a task instance this server handed out, if it remembers."""
        return self._tasks.get(ti_id)

    def known_task(self, ti_id: int) -> tuple[CompiledDag, str] | None:
        """The DAG version and task id of a task instance this server handed out, if
        all of it is in memory (no database read)."""
        known = self._tasks.get(ti_id)
        run = None if known is None else self._runs.get(known[0])
        dag = None if run is None else self._dags.get(run.version_id)
        return None if dag is None or known is None else (dag, known[1])

    def remember(self, infos: Iterable[RunInfo]) -> None:
        """Cache runs a transaction created, once it has committed (their first claim reads none)."""
        for info in infos:
            self._runs.put(info.pk, info)
