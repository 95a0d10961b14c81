"""Numbered crash points for the kill -9 tests: `CMP_CRASHPOINT=N` kills this process at the N-th point it
passes (before and after every commit, after every publish and every move), so a test can stop a run at each
place where work becomes durable and prove the platform resumes from there; `0` only lists the points passed in
`CMP_CRASHPOINT_LOG`. Unset, it costs one dict lookup."""

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
    if int(target) in (0, _passed):
        log = os.environ.get("CMP_CRASHPOINT_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(f"{_passed} {where}\n")
    if _passed == int(target):
        os.kill(os.getpid(), signal.SIGKILL)
