"""Child processes of the harness, and what /proc says about any process.

Every process is started in its own session with its output in a log file,
so a failure can quote the log and cleanup can find what it started. The
worker's runner processes live in sessions of their own (the worker kills
them on SIGTERM); if a worker has to be SIGKILLed, its runners are found by
parent pid and killed too.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class ProcessFailed(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    """A started command whose output goes to `log_path`."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path,
    ) -> None:
        self.name = name
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.started_at = time.time()
        self.popen = subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._known_descendants: set[int] = set()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """Wait until the log matches `pattern`; fail with the log's tail if the process dies first."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = regex.search(self.output())
            if found:
                return found
            if not self.alive():
                raise ProcessFailed(
                    f"{self.name} exited with status {self.popen.returncode} before "
                    f"{pattern!r} appeared; last output:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                raise ProcessFailed(
                    f"{self.name}: no {pattern!r} after {timeout:g}s; last output:\n{self.tail()}"
                )
            time.sleep(0.02)

    def descendants(self) -> list[int]:
        found = descendants(self.pid)
        self._known_descendants.update(found)
        return found

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL for it and everything it started if it does not exit in time."""
        self.descendants()
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(5)
        for pid in self._known_descendants:
            if pid_alive(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._log.close()


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


def _stat_fields(pid: int) -> list[str]:
    # The command name may contain spaces and parentheses: split after the last ')'.
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def parent_of(pid: int) -> int:
    return int(_stat_fields(pid)[1])


def descendants(root: int) -> list[int]:
    """Every live process below `root` (children, their children, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            children.setdefault(parent_of(int(entry.name)), []).append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, ValueError, IndexError):
            continue
    out: list[int] = []
    frontier = [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            out.append(child)
            frontier.append(child)
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (its own threads, not its children)."""
    try:
        fields = _stat_fields(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # After the name: state(0) ppid(1) ... utime(11) stime(12)
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _kb_field(path: Path, name: str) -> float:
    try:
        for line in path.read_text().splitlines():
            if line.startswith(name + ":"):
                return float(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


def rss_mb(pid: int) -> float:
    """Resident set size in MiB (shared pages counted in full)."""
    return _kb_field(Path(f"/proc/{pid}/status"), "VmRSS") / 1024


def pss_mb(pid: int) -> float:
    """Proportional set size in MiB: shared pages split between the processes sharing them."""
    return _kb_field(Path(f"/proc/{pid}/smaps_rollup"), "Pss") / 1024


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds of a set of processes at one instant."""

    at: float
    seconds: dict[int, float]

    @classmethod
    def take(cls, pids: Sequence[int]) -> CpuSnapshot:
        return cls(time.monotonic(), {pid: cpu_seconds(pid) for pid in pids})

    def used_until(self, later: CpuSnapshot) -> float:
        """CPU seconds used between the two snapshots by the processes of `later`."""
        return sum(max(0.0, s - self.seconds.get(pid, 0.0)) for pid, s in later.seconds.items())
