"""A document rendered before it may be published, and published later by its own step.

On PostgreSQL a big posting's rows are copied by PostgreSQL's backend for seconds while the run's own process
has a core with nothing to do (core/ledger.post_to_postgres). The documents that follow the posting (the
sales-ledger posting file, the partner's acknowledgement) are rendered in that time from what the posting reads,
and their steps take them ready: only after the posting has committed (a posting rolled back discards them), and
only when what the step would write from the scratch agrees with what they were rendered from (`fingerprint`: the
posting file's count and total, the acknowledgement's header but its time); otherwise the step renders its own.
The two halves are the store's own `write_from` (`stage`, `publish_staged`): staged and made durable while
PostgreSQL writes (a local folder stages beside the target, under a name `sweep_parts` removes once its process
is gone; another store in this process's scratch folder, which `sweep_scratch` removes), so publishing is a
rename with the same `published` crash point as a document rendered on the spot. What the run has not published
when it ends is discarded (`core/db/mirror.mirrored`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from cmp_pipelines.core.delivery import file_digest
from cmp_pipelines.core.files.store import FileStoreLike


@dataclass
class PreparedDocument:
    files: FileStoreLike
    path: str  # where it is published in the store
    staged: Path  # the finished bytes, durable, where the store publishes them from (`FileStoreLike.stage`)
    fingerprint: Hashable  # what it was rendered from
    digest: tuple[str, int]  # sha256 and size, for the delivery register (core/delivery.enqueue)

    def publish(self) -> str:
        return self.files.publish_staged(self.path, self.staged)

    @property
    def published_digest(self) -> tuple[str, int] | None:
        """The digest for the delivery register once published; None where the store may have kept an earlier
        version at the path (it is then read from the store)."""
        return self.digest if getattr(self.files, "replaces_published", False) else None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.staged.unlink(missing_ok=True)


def prepare(files: FileStoreLike, path: str, produce: Callable[[Path], None], fingerprint: Hashable
            ) -> PreparedDocument:
    """`produce` writes the document at the local path it is given, staged by the store (made durable there) and
    hashed, so publishing it later is a rename and a registration; nothing is published."""
    staged = files.stage(path, produce)
    try:
        digest = file_digest(staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    return PreparedDocument(files, path, staged, fingerprint, digest)


def discard_all(documents: dict[str, PreparedDocument]) -> None:
    for document in documents.values():
        document.discard()
    documents.clear()


def take(prepared: dict[str, PreparedDocument], key: str, fingerprint: Hashable) -> PreparedDocument | None:
    """The document prepared under `key` if it was rendered from `fingerprint`; one that was not is discarded."""
    document = prepared.pop(key, None)
    if document is not None and document.fingerprint != fingerprint:
        document.discard()
        return None
    return document
