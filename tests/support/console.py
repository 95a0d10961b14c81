"""The console's tests: the real API server over a copy of config/ (a console save writes the YAML it serves)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from cmp_pipelines.core.settings import PROJECT_ROOT
from tests.support.api import KEYS


@pytest.fixture
def console(request, platform, tmp_path, monkeypatch):
    """(api, config_dir): the server started after CMP_CONFIG_DIR points at the copy, so the repo's stays as is."""
    config_dir = tmp_path / "config"
    shutil.copytree(PROJECT_ROOT / "config", config_dir)
    monkeypatch.setenv("CMP_CONFIG_DIR", str(config_dir))
    return request.getfixturevalue("api"), config_dir


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([0-9a-f]+)"', html).group(1)


def etag(html: str) -> str:
    return re.search(r'name="etag" value="([0-9a-f]*)"', html).group(1)


@contextmanager
def signed_in(base_url: str, client_id: str) -> Iterator[httpx.Client]:
    """A browser-like client (cookies kept, no API key header) signed in with the client's key."""
    with httpx.Client(base_url=base_url, timeout=10) as http:
        page = http.get("/console/login")
        answer = http.post("/console/login", data={"csrf": csrf(page.text), "next": "/console/",
                                                   "api_key": KEYS[client_id]})
        assert answer.status_code == 303, answer.text
        yield http
