"""`python -m bench`: run the workloads, print the figures, write bench/RESULTS.md."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from bench import machine, report
from bench.harness import Harness
from bench.model import Env
from bench.workloads import ALL

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "RESULTS.md"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--smoke", action="store_true", help="tiny sizes, 1 run each; writes to a temp file")
    p.add_argument("--only", help="comma-separated workloads to run, e.g. W1,W3 (default: all)")
    p.add_argument("--runs", type=int, help="runs per case (default: 3, smoke: 1)")
    p.add_argument("--db", choices=["postgres", "sqlite"], default="postgres", help="metadata database")
    p.add_argument(
        "--pg",
        default=os.environ.get("WEIR_BENCH_DATABASE_URL")
        or os.environ.get("WEIR_TEST_DATABASE_URL")
        or DEFAULT_PG,
        help="a Postgres URL used to create and drop databases "
        "[env: WEIR_BENCH_DATABASE_URL, WEIR_TEST_DATABASE_URL]",
    )
    p.add_argument("--concurrency", type=int, help="slots per worker (default: 8, smoke: 2)")
    p.add_argument("--output", type=Path, help="where to write the Markdown report")
    p.add_argument("--json", type=Path, help="also write every figure as JSON here")
    p.add_argument("--keep", action="store_true", help="keep the work folder (process logs)")
    return p.parse_args(argv)


def log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # `kill` cleans up like Ctrl+C: processes stopped, databases dropped.
    signal.signal(signal.SIGTERM, _interrupt)
    workloads = list(ALL)
    if args.only:
        wanted = {w.strip().upper() for w in args.only.split(",") if w.strip()}
        unknown = wanted - {w.id for w in ALL}
        if unknown:
            print(f"unknown workload(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        workloads = [w for w in ALL if w.id in wanted]
    runs = args.runs or (1 if args.smoke else 3)
    workdir = Path(tempfile.mkdtemp(prefix="weir-bench-"))
    env = Env(
        backend=args.db,
        pg_admin=args.pg,
        smoke=args.smoke,
        workdir=workdir,
        repo=REPO,
        concurrency=args.concurrency or (2 if args.smoke else 8),
        log=log,
    )
    output = args.output or (workdir.parent / f"{workdir.name}-RESULTS.md" if args.smoke else RESULTS)
    names = ", ".join(w.id for w in workloads)
    log(f"weir bench: {names} on {env.backend}, {runs} run(s) each; work in {workdir}")
    began = time.monotonic()
    try:
        facts = machine.describe(env)
        results = Harness(env).run(workloads, runs)
        facts = dataclasses.replace(facts, probe_ms=(facts.probe_ms[0], machine.cpu_probe_ms()))
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report.render(facts, env, results, runs, workloads)
    report.write(output, text)
    if args.json:
        args.json.write_text(report.to_json(results))
    print()
    print(text)
    log(f"wrote {output} in {time.monotonic() - began:.0f}s")
    failed = [r for r in results if r.errors]
    return 1 if failed else 0
