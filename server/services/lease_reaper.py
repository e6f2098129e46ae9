"""Lease reaper: attempts whose worker stopped heartbeating fail (and retry)."""

from __future__ import annotations

from weir.server import completion
from weir.server.services.sweep import Sweep


class LeaseReaper(Sweep):
    name = "lease-reaper"
    sweep = staticmethod(completion.expire_leases)
