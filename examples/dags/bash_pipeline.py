"""A shell pipeline in the classic style: generate, count, compress, clean up.

Each step is a bash command; the steps share a work folder named after the
run. `cleanup` uses trigger_rule="all_done" so it runs even when a step fails.
"""

from __future__ import annotations

from datetime import timedelta

from weir import DAG, bash_task

WORK = '/tmp/weir-bash-pipeline/"$WEIR_RUN_ID"'

with DAG(
    "bash_pipeline",
    schedule=timedelta(hours=6),
    tags=["example", "bash"],
    description="Generate a word file, count words, compress it, clean up.",
    default_args={"retries": 1, "retry_delay": timedelta(seconds=5), "timeout": timedelta(minutes=5)},
) as bash_pipeline:
    generate = bash_task(
        "generate",
        command=f'mkdir -p {WORK} && for i in $(seq 1 2000); do echo "line $i weir workflow orchestrator"; '
        f"done > {WORK}/words.txt && wc -l < {WORK}/words.txt",
    )
    count = bash_task(
        "count_words",
        command=f"tr ' ' '\\n' < {WORK}/words.txt | sort | uniq -c | sort -rn | head -5 "
        f"&& wc -w < {WORK}/words.txt",
    )
    checksum = bash_task("checksum", command=f"sha256sum {WORK}/words.txt | cut -d' ' -f1")
    compress = bash_task(
        "compress",
        command=f"gzip -kf {WORK}/words.txt && stat -c %s {WORK}/words.txt.gz",
    )
    cleanup = bash_task("cleanup", command=f"rm -rf {WORK} && echo removed", trigger_rule="all_done")

    generate >> [count, checksum] >> compress >> cleanup
