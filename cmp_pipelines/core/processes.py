"""Which process owns a run or a scratch folder, told apart from a later process that reuses its pid, and from a
process of another boot or another PID namespace (a container sharing /dev/shm or the data volume), which this
process cannot see and so never judges dead."""

from __future__ import annotations

import hashlib
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
def namespace() -> str:
    """This boot and PID namespace, in 8 hex digits: pids compare only within one."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()
        pid_ns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        boot, pid_ns = "", ""
    return hashlib.sha256(f"{socket.gethostname()}/{boot}/{pid_ns}".encode()).hexdigest()[:8]


def host() -> str:
    return f"{socket.gethostname()}/{namespace()}"


def token(pid: int | None = None) -> str:
    """`<pid>-<start time>-<namespace>` of a live process (this one by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{_start_ticks(pid) or 0}-{namespace()}"


def alive(owner: str) -> bool:
    """False only when the process named by `token()` is known to be gone: same boot and PID namespace, and its
    pid is free or now belongs to a process that started at another time. Anything else counts as alive."""
    try:
        pid_text, start, space = owner.split("-", 2)
        pid = int(pid_text)
    except ValueError:
        return True
    if space != namespace() or not os.path.exists("/proc/self/stat"):
        return True
    return _start_ticks(pid) == start


def yield_cpu(nice: int) -> int:
    """Raise the calling thread's nice value to `nice` (never lower it: an unprivileged process cannot take it back,
    and a launcher may have set a higher one); returns the value now in force. On Linux nice is per thread: threads
    started afterwards inherit it (DuckDB's, opened lazily; the ledger's copy thread; psycopg's), those already
    running keep theirs, so it is called before a run opens its store. Between sessions (autogroups: another
    terminal, a systemd unit, a container) the kernel shares the CPU by group and the nice value has no effect."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        return nice
    return current
