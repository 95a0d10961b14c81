"""A document rendered before it may be published, and published later only if still true.

On PostgreSQL a big posting's rows are copied by PostgreSQL's backend for seconds while the run's own process
has a core with nothing to do (core/ledger.post_to_postgres). The documents that follow the posting (the
sales-ledger posting file, the partner's acknowledgement) are rendered in that time from the same scratch rows,
into this process's scratch folder, and the steps that publish them take them ready: only once the posting has
committed (a rolled-back posting discards them), and only when what the publisher would write agrees with what
they were rendered from (`fingerprint`: a release between the two steps changes an acknowledgement's counts, and
it is then rendered again). Publishing goes through the store's own `write_from`, so staging, durability and the
`published` crash point are the same as for a document rendered on the spot.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path

from cmp_pipelines.core.files.store import FileStoreLike
from cmp_pipelines.core.settings import scratch_dir


@dataclass
class PreparedDocument:
    path: str  # where it is published in the store
    local: Path  # the finished bytes, in this process's scratch folder (swept if the process dies)
    fingerprint: Hashable  # what it was rendered from

    def publish(self, files: FileStoreLike) -> str:
        """Into the store at `path`; the local file is moved, not copied, where the store stages on the same disk."""
        try:
            return files.write_from(self.path, lambda target: shutil.move(self.local, target))
        finally:
            self.discard()

    def discard(self) -> None:
        self.local.unlink(missing_ok=True)


def prepare(path: str, produce: Callable[[Path], None], fingerprint: Hashable) -> PreparedDocument:
    """`produce` writes the document at the local path it is given; nothing is published."""
    handle, local = tempfile.mkstemp(prefix="cmp-prepared-", suffix=".part", dir=scratch_dir())
    os.close(handle)
    try:
        produce(Path(local))
    except BaseException:
        os.unlink(local)
        raise
    return PreparedDocument(path, Path(local), fingerprint)


def take(prepared: dict[str, PreparedDocument], key: str, fingerprint: Hashable) -> PreparedDocument | None:
    """The document prepared under `key` if it was rendered from `fingerprint`; one that was not is discarded."""
    document = prepared.pop(key, None)
    if document is not None and document.fingerprint != fingerprint:
        document.discard()
        return None
    return document
