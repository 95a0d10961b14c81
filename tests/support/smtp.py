"""A real SMTP server on loopback (aiosmtpd), started per test on a free port: what it received, and a switch
to make it refuse (a 550 or 451 answer to DATA) or to stop listening."""

from __future__ import annotations

import asyncio
import email
import socket
from email.message import Message

import pytest
from aiosmtpd.controller import Controller


class Inbox:
    def __init__(self):
        self.messages: list[tuple[list[str], Message]] = []
        self.refuse_with: str | None = None  # e.g. "550 5.7.1 mailbox unavailable"
        self.slow_seconds = 0.0  # answer each message this late: a sender is still mid-session when others start

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        if self.slow_seconds:
            await asyncio.sleep(self.slow_seconds)
        if self.refuse_with:
            return self.refuse_with
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"

    def subjects(self) -> list[str]:
        return sorted(str(m["Subject"]) for _, m in self.messages)

    def by_subject(self, fragment: str) -> tuple[list[str], Message]:
        [found] = [(r, m) for r, m in self.messages if fragment in str(m["Subject"])]
        return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def smtp_server(monkeypatch):
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    monkeypatch.setenv("CMP_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("CMP_SMTP_PORT", str(port))
    inbox.port = port
    yield inbox
    controller.stop()


def text_of(message: Message) -> str:
    """The text/plain part of a message (single part or multipart/alternative)."""
    if message.is_multipart():
        part = next(p for p in message.walk() if p.get_content_type() == "text/plain")
        return part.get_payload(decode=True).decode().replace("\r\n", "\n")
    return message.get_payload(decode=True).decode().replace("\r\n", "\n")


def html_of(message: Message) -> str | None:
    if not message.is_multipart():
        return None
    part = next((p for p in message.walk() if p.get_content_type() == "text/html"), None)
    return part.get_payload(decode=True).decode().replace("\r\n", "\n") if part else None
