"""A fresh bucket per test on the session's moto S3 server (tests/conftest.py)."""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture
def bucket(s3_server):
    """``{"name", "url", "client", "storage_options", "endpoint"}`` of a new, empty bucket on the loopback moto server."""
    import boto3

    client = boto3.client("s3", endpoint_url=s3_server["endpoint"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    name = f"stg-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return {"name": name, "url": f"s3://{name}", "client": client, "storage_options": s3_server["storage_options"],
            "endpoint": s3_server["endpoint"]}
