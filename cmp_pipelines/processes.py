"""Which process owns a run or a scratch folder, told apart from a later process that reuses its pid."""

from __future__ import annotations

import os
import socket
from functools import cache


def _start_ticks(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat.rsplit(b")", 1)[1].split()[19].decode()  # field 22: start time in clock ticks since boot


@cache
def host() -> str:
    return socket.gethostname()


def token(pid: int | None = None) -> str:
    """`<pid>-<start time>` of a live process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_ticks(pid) or 0}"


def alive(owner: str) -> bool:
    """True while the process named by `token()` runs; a recycled pid has another start time."""
    try:
        pid_text, start = owner.split("-", 1)
        pid = int(pid_text)
    except ValueError:
        return False
    if not os.path.exists("/proc/self/stat"):  # no procfs: the pid alone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return _start_ticks(pid) == start
