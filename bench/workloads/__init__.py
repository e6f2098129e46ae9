"""The seven workloads of issue 4, W1 ... W7, in the order they run."""

from __future__ import annotations

from bench.model import Workload
from bench.workloads import (
    w1_chain,
    w2_fan,
    w3_wide,
    w4_burn_down,
    w5_idle,
    w6_start_up,
    w7_open_loop,
)

ALL: tuple[Workload, ...] = (
    w1_chain.WORKLOAD,
    w2_fan.WORKLOAD,
    w3_wide.WORKLOAD,
    w4_burn_down.WORKLOAD,
    w5_idle.WORKLOAD,
    w6_start_up.WORKLOAD,
    w7_open_loop.WORKLOAD,
)
