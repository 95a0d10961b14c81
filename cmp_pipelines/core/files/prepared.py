"""A document rendered before it may be published, and published later only if still true.

On PostgreSQL a big posting's rows are copied by PostgreSQL's backend for seconds while the run's own process
has a core with nothing to do (core/ledger.post_to_postgres). The documents that follow the posting (the
sales-ledger posting file, the partner's acknowledgement) are rendered in that time from the same scratch rows,
and the steps that publish them take them ready: only once the posting has
committed (a rolled-back posting discards them), and only when what the publisher would write agrees with what
they were rendered from (`fingerprint`: a release between the two steps changes an acknowledgement's counts, and
it is then rendered again). The two halves are the store's own `write_from` (`stage`, `publish_staged`): staged
beside its target and made durable while PostgreSQL writes, so publishing is a rename, with the same `published`
crash point as a document rendered on the spot; a staged file whose process died is swept as any writer's.
"""

from __future__ import annotations

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

    def discard(self) -> None:
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


def take(prepared: dict[str, PreparedDocument], key: str, fingerprint: Hashable) -> PreparedDocument | None:
    """The document prepared under `key` if it was rendered from `fingerprint`; one that was not is discarded."""
    document = prepared.pop(key, None)
    if document is not None and document.fingerprint != fingerprint:
        document.discard()
        return None
    return document
