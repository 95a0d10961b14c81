"""Numbered crash points for the kill -9 tests: `CMP_CRASHPOINT=N` kills this process at the N-th point it
passes (before and after every commit, after every publish and every move), so a test can stop a run at each
place where work becomes durable and prove the platform resumes from there. Unset, it costs one dict lookup."""

from __future__ import annotations

import os
import signal

_passed = 0


def crashpoint(where: str) -> None:
    target = os.environ.get("CMP_CRASHPOINT")
    if not target:
        return
    global _passed
    _passed += 1
    if _passed == int(target):
        log = os.environ.get("CMP_CRASHPOINT_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{_passed} {where}\n")
        os.kill(os.getpid(), signal.SIGKILL)
