"""A real SFTP server on loopback for the transport tests: asyncssh's own server, in a thread with its own event
loop, serving a temporary folder (chroot), with a generated host key and one authorised client key.

It can misbehave on cue: `drop_after` bytes written, it aborts the connection mid-upload (once); a folder in
`denied` refuses every open and rename below it with "permission denied" (the tests run as root, where a chmod
would not stop anything).
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class SftpServer:
    root: Path
    host_public: str  # "ssh-ed25519 AAAA..." as a partner would publish it
    client_key: Path  # the private key file our side uses
    port: int = 0
    drop_after: int | None = None
    denied: set[str] = field(default_factory=set)  # folders (relative to root) refusing writes and renames
    written: int = 0
    drops: int = 0
    uploads_opened: list[str] = field(default_factory=list)

    def transport(self, remote_folder: str = "upload", **extra) -> dict:
        """The partners.yaml transport block for this server (key file given as an absolute path)."""
        return {"type": "sftp", "host": "127.0.0.1", "port": self.port, "user": "cmp",
                "key_file": str(self.client_key), "host_key": self.host_public, "remote_folder": remote_folder,
                "connect_timeout_seconds": 5, **extra}

    def files(self, folder: str = "upload") -> dict[str, bytes]:
        base = self.root / folder
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def _factory(state: SftpServer):
    import asyncssh  # here, not at import: the root conftest imports this module in every test process

    class Server(asyncssh.SFTPServer):
        def __init__(self, chan):
            super().__init__(chan, chroot=str(state.root).encode())

        def _refused(self, path: bytes) -> bool:
            local = Path(self.map_path(path).decode())
            return any(local.is_relative_to(state.root / folder) for folder in state.denied)

        def open(self, path, pflags, attrs):
            if pflags & asyncssh.FXF_WRITE:
                if self._refused(path):
                    raise asyncssh.SFTPPermissionDenied("Permission denied")
                state.uploads_opened.append(path.decode())
            return super().open(path, pflags, attrs)

        def rename(self, oldpath, newpath):
            if self._refused(newpath) or self._refused(oldpath):
                raise asyncssh.SFTPPermissionDenied("Permission denied")
            return super().rename(oldpath, newpath)

        def write(self, file_obj, offset, data):
            if state.drop_after is not None and state.written + len(data) > state.drop_after:
                keep = state.drop_after - state.written
                super().write(file_obj, offset, data[:keep])
                file_obj.flush()
                state.drop_after, state.drops = None, state.drops + 1
                self.connection.abort()  # the line goes dead mid-upload
                return keep
            state.written += len(data)
            return super().write(file_obj, offset, data)

    return Server


class _Loop:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


def start_server(tmp: Path) -> tuple[SftpServer, _Loop, object]:
    import asyncssh

    root = tmp / "sftp-root"
    (root / "upload").mkdir(parents=True)
    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client = asyncssh.generate_private_key("ssh-ed25519")
    client_key = tmp / "ssh" / "cmp_ed25519"
    client_key.parent.mkdir(parents=True, exist_ok=True)
    client.write_private_key(str(client_key))
    authorized = asyncssh.import_authorized_keys(client.export_public_key().decode())
    state = SftpServer(root, host_key.export_public_key().decode().strip(), client_key)
    loop = _Loop()

    async def listen():
        return await asyncssh.listen("127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=authorized,
                                     sftp_factory=_factory(state), allow_scp=False)

    acceptor = loop.run(listen())
    state.port = acceptor.sockets[0].getsockname()[1]
    return state, loop, acceptor


@pytest.fixture
def sftp_server(tmp_path_factory):
    state, loop, acceptor = start_server(tmp_path_factory.mktemp("sftp"))
    yield state

    async def close():
        acceptor.close()
        await acceptor.wait_closed()

    loop.run(close())
    loop.stop()
