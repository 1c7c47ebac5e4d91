"""Object-store options for litdata and fsspec from one set of user settings (endpoint, credentials, plain HTTP).

litdata talks to S3 through boto3 (index files) and obstore (chunks, uploads); fsspec (the manifest) through s3fs.
Each wants the same settings in a different shape. Users give boto3-style ``storage_options``
(``aws_access_key_id``, ``aws_secret_access_key``, ``region_name``, ``endpoint_url``) or just ``endpoint_url``.

Plain HTTP: obstore refuses ``http://`` endpoints (such as a MinIO or moto server on loopback) unless its client
option ``allow_http`` is set, and litdata builds obstore's client options from its own module constant. ``allow_http=True``
adds ``allow_http`` to that constant in this process (DataLoader and ``optimize`` workers are forked from it, and
:func:`apply_allow_http` is called again in spawned ones); with an ``http://`` endpoint and ``allow_http=False``
the error says so instead of failing deep inside a worker.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlparse

from mlcost_pl.utils.fs import is_local


def is_remote(url: str) -> bool:
    return not is_local(url)


def boto_options(endpoint_url: str | None, storage_options: dict[str, Any] | None) -> dict[str, Any]:
    """boto3 client kwargs (what litdata's ``storage_options`` are)."""
    opts = dict(storage_options or {})
    if endpoint_url:
        opts["endpoint_url"] = str(endpoint_url)
    return opts


def fsspec_options(boto: dict[str, Any]) -> dict[str, Any]:
    """s3fs options equivalent to boto3 client kwargs ``boto``."""
    client = {k: boto[k] for k in ("endpoint_url", "region_name") if boto.get(k)}
    # Bounded retries: an unreachable endpoint is reported in seconds, not after minutes of back-off.
    out: dict[str, Any] = {"skip_instance_cache": True,
                           "config_kwargs": {"connect_timeout": 5, "retries": {"max_attempts": 2, "mode": "standard"}}}
    if client:
        out["client_kwargs"] = client
    if boto.get("aws_access_key_id"):
        out["key"] = boto["aws_access_key_id"]
    if boto.get("aws_secret_access_key"):
        out["secret"] = boto["aws_secret_access_key"]
    if boto.get("aws_session_token"):
        out["token"] = boto["aws_session_token"]
    return out


def apply_allow_http(url: str, endpoint_url: str | None, allow_http: bool) -> None:
    """Let litdata's object-store client use a plain-HTTP endpoint, or refuse one with a clear message.

    Raises:
        ValueError: ``endpoint_url`` is ``http://`` and ``allow_http`` is false.
    """
    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if not is_remote(url) or not endpoint or urlparse(str(endpoint)).scheme != "http":
        return
    if not allow_http:
        raise ValueError(
            f"endpoint_url={endpoint} is plain HTTP, which litdata's object-store client refuses by default: set "
            "allow_http=true (data.allow_http=true) for a trusted endpoint such as a local MinIO/moto server"
        )
    from litdata.streaming import downloader

    downloader._OBSTORE_CLIENT_OPTIONS["allow_http"] = True


class AllowHttpWorkerInit:
    """A DataLoader ``worker_init_fn`` that re-applies ``allow_http`` in spawned workers (fork inherits it)."""

    def __init__(self, url: str, endpoint_url: str | None, allow_http: bool) -> None:
        self.args = (url, endpoint_url, allow_http)

    def __call__(self, worker_id: int) -> None:
        apply_allow_http(*self.args)
