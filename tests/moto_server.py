"""A moto server on 127.0.0.1 and an ECS service world seeded into it, for the AWS tests.

The server runs in a thread of the test process; boto3 reaches it through ``AWS_ENDPOINT_URL``
with dummy credentials, so the code under test builds its clients exactly as it would for AWS.
"""

from __future__ import annotations

import pytest

# The world itself is the ECS emulator's (one definition for the product and the tests).
from scalefinder.loadgen.emulator.world import (  # noqa: F401 (re-exported for the tests)
    CLUSTER, REGION, SERVICE, World, client, register_targets, reset, seed_world, service_state, start_server)


@pytest.fixture(scope="session")
def moto_endpoint():
    server, endpoint = start_server()
    yield endpoint
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch, tmp_path):
    """A clean moto account, with the environment pointing every boto3 client at it."""
    reset(moto_endpoint)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    return moto_endpoint
