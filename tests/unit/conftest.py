"""Unit tier: no Ray. Starting Ray here is a test bug, so ray.init raises."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow.fs as pafs
import pytest


@pytest.fixture(autouse=True)
def _no_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unit tests must not start Ray; move this test to tests/integration")

    monkeypatch.setattr(ray, "init", refuse)


@pytest.fixture(scope="session")
def s3() -> Iterator[pafs.S3FileSystem]:
    """A real S3 endpoint on 127.0.0.1 (moto's server), reached through pyarrow's own S3 client. ``s3://`` URIs
    find it as a user's would find theirs: by the standard AWS variables (``AWS_ENDPOINT_URL``, keys, region)."""
    server = pytest.importorskip("moto.server", reason="the [test] extra has moto").ThreadedMotoServer(
        ip_address="127.0.0.1", port=0, verbose=False
    )
    server.start()
    host, port = server.get_host_and_port()
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "AWS_ENDPOINT_URL": f"http://{host}:{port}",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }.items():
            mp.setenv(k, v)
        fs = pafs.S3FileSystem(endpoint_override=f"http://{host}:{port}", allow_bucket_creation=True)
        fs.create_dir("ddn-test")
        yield fs
    server.stop()
