"""Fan-out / fan-in: one task per region in parallel, joined by a summary.

The regions are processed by separate task instances that workers run at
the same time; `combine` waits for all of them and receives every result.
"""

from __future__ import annotations

import hashlib
import time

from weir import dag, task

REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south", "ap-northeast"]


@dag(schedule="@hourly", tags=["example", "fan-out"], params={"sample_size": 1000})
def fanout_regions():
    """Latency percentiles per region, in parallel, then a global summary."""

    @task
    def list_regions() -> list[str]:
        return REGIONS

    @task(retries=1, retry_delay=5)
    def measure(region: str, sample_size: int = 1000) -> dict:
        # Stand-in for a query against each region's metrics store.
        samples = sorted(
            int(hashlib.sha256(f"{region}-{i}".encode()).hexdigest()[:4], 16) % 400 + 20
            for i in range(sample_size)
        )
        time.sleep(0.2)
        p50, p99 = samples[len(samples) // 2], samples[int(len(samples) * 0.99)]
        print(f"{region}: p50={p50}ms p99={p99}ms over {sample_size} samples")
        return {"region": region, "p50": p50, "p99": p99}

    @task
    def combine(per_region: list[dict], regions: list[str]) -> dict:
        assert {r["region"] for r in per_region} == set(regions), "a region is missing"
        worst = max(per_region, key=lambda r: r["p99"])
        return {"regions": len(per_region), "worst_region": worst["region"], "worst_p99": worst["p99"]}

    regions = list_regions()
    measurements = [measure.override(task_id=f"measure_{r.replace('-', '_')}")(r) for r in REGIONS]
    for m in measurements:
        regions >> m
    combine(measurements, regions)


fanout_regions()
