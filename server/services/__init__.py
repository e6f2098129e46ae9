"""Background services of the control plane, each in its own module.

Every service is a `Service`: `run()` only waits (interval, wake-up, stop)
and calls `tick(now)`, one testable pass that returns what it did.
"""
