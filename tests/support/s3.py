"""An S3-compatible server for tests: moto's server mode (ThreadedMotoServer, a real HTTP endpoint on loopback that
boto3 reaches as it reaches AWS), started once per test process; each test gets a bucket of its own.

MinIO would be a second real implementation, but no registry this project installs from ships its server (PyPI's
`minio` is the client library only); moto is pure Python and installs from PyPI like the rest.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import pytest

TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "cmp-test-key-id", "AWS_SECRET_ACCESS_KEY": "cmp-test-secret-never-shown",
                    "AWS_DEFAULT_REGION": "eu-west-2"}


@dataclass
class Bucket:
    endpoint: str
    name: str

    @property
    def url(self) -> str:
        return f"s3://{self.name}/cmp"

    def client(self):
        from cmp_pipelines.lib.resources.s3_store import s3_client

        return s3_client(self.endpoint)

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server, monkeypatch) -> Bucket:
    """A fresh bucket; the environment names the endpoint and the credentials as a deployment's would."""
    for name, value in TEST_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CMP_S3_ENDPOINT_URL", s3_server)
    bucket = Bucket(s3_server, f"cmp-{secrets.token_hex(6)}")
    bucket.client().create_bucket(Bucket=bucket.name,
                                  CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    return bucket
