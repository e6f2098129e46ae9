"""Schedule-to-start timeouts: tasks left queued too long fail with that reason."""

from __future__ import annotations

from weir.server import completion
from weir.server.services.sweep import Sweep


class StartTimeouts(Sweep):
    name = "start-timeouts"
    sweep = staticmethod(completion.time_out_waiting)
