"""Weir's benchmarks: fixed workloads (W1-W7) on real processes, figures in bench/RESULTS.md.

`make bench` (`python -m bench`) runs every workload at full size, 3 runs
each, and rewrites the figures in bench/RESULTS.md; `python -m bench --smoke`
runs tiny sizes (under a minute, what CI runs); `--only W1,W3` picks
workloads; `--db sqlite` uses SQLite instead of Postgres. `python -m
bench.probe` looks inside one run to explain a figure.

Layout: `cli` (options, report), `harness` (runs, retries, other load),
`cluster` (server and worker processes), `database` (fresh databases, reading
timestamps), `procs` and `load` (/proc), `workloads/` (one module per
workload), `dags/` (the benchmark DAG files the workers load).
"""
