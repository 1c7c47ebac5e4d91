"""Shared by the serving tests: a real redis-server on a free port, and a tiny export (TinyCNN on 8x8 digits)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

# prometheus-client picks its multiprocess mode at import: point it at a folder before anything imports it
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="mlcost-test-prom-"))

REDIS = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path):
    """``(url, process)`` of a real redis-server on 127.0.0.1 and a free port (no persistence)."""
    if REDIS is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server; .ci/run installs it)")
    port = free_port()
    proc = subprocess.Popen([REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield f"redis://127.0.0.1:{port}/0", proc
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_url(redis_server):
    return redis_server[0]


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    """A real recipes.export folder (fp32 + gated INT8 ONNX) of a TinyCNN trained for a few seconds."""
    from mlcost_pl.export import export
    from tests.export.conftest import train_tiny

    model, dm = train_tiny(epochs=3)
    out = tmp_path_factory.mktemp("serve") / "model"
    export(model, dm, out, calibration_samples=64, parity_samples=64, batch_sizes=(1,), latency_iters=1,
           verify_samples=32)
    return out
