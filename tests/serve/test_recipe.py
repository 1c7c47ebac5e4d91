"""recipes.serve and load_export: manifest check before load, variant choice, deploy=k8s; the cost figure."""

from __future__ import annotations

import json
import shutil

import pytest

from mlcost_pl.serve.metrics import prepare_multiprocess_dir, read_multiprocess_dir, usd_per_1k_predictions
from mlcost_pl.serve.model import load_export
from recipes._cli import run_cli
from recipes.serve import serve
from tests.helpers.cfg import compose_cfg


def test_auto_times_the_gated_variants_and_says_why(export_dir):
    model = load_export(export_dir, variant="auto", timing_iters=2)
    assert model.variant in ("fp32", "int8") and set(model.timings_ms) == {"fp32", "int8"}
    assert "faster than" in model.reason and model.sample_shape == (1, 8, 8) and len(model.version) == 16
    assert load_export(export_dir, variant="int8").predictor.path.endswith("model.int8.onnx")
    assert load_export(export_dir, variant="fp32").reason == "serve.variant=fp32"


def test_a_tampered_or_partial_export_is_refused_naming_the_file(export_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)  # the one-line form, whatever an earlier test left set
    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    data = bytearray((bad / "model.onnx").read_bytes())
    data[-5] ^= 0xFF
    (bad / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"refusing a tampered or partial export: model.onnx: sha256 differs"):
        load_export(bad)
    (bad / "model.int8.onnx").unlink()
    cfg = compose_cfg("serve", [f"model_dir={bad}"], tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run_cli(serve, cfg)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1 and "model.int8.onnx: missing" in err
    with pytest.raises(ValueError, match="serve.variant must be one of"):
        load_export(export_dir, variant="int4")
    with pytest.raises(FileNotFoundError, match="model_dir=.*no such folder"):
        load_export(tmp_path / "nothing")


def test_deploy_k8s_writes_the_manifests(tmp_path):
    out = tmp_path / "k8s"
    cfg = compose_cfg("serve", ["deploy=k8s", f"deploy.out={out}", "deploy.max_replicas=5", "serve.drain_seconds=20"],
                      tmp_path)
    paths = serve(cfg)
    assert len(paths) == 5 and (out / "Dockerfile").is_file()
    deployment = (out / "deployment.yaml").read_text()
    assert "serve.drain_seconds=20" in deployment
    cfg = compose_cfg("serve", ["deploy=k8s"], tmp_path)
    with pytest.raises(ValueError, match="deploy.out is required"):
        serve(cfg)


def test_usd_per_1k_predictions_and_the_multiprocess_folder(tmp_path):
    assert usd_per_1k_predictions(0.0832, 3600, 1_000_000) == pytest.approx(0.0832 / 1000)
    assert usd_per_1k_predictions(1.0, 10, 0) != usd_per_1k_predictions(1.0, 10, 0)  # NaN before the first
    with pytest.raises(ValueError, match="price_per_hour"):
        usd_per_1k_predictions(-1, 1, 1)
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "counter_999999999.db").write_bytes(b"")  # a process that is gone
    (folder / "counter_1.db").write_bytes(b"")  # pid 1 runs
    import os

    before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    try:
        prepare_multiprocess_dir(folder)
    finally:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = before
    assert sorted(p.name for p in folder.iterdir()) == ["counter_1.db"]
    (folder / "counter_1.db").unlink()
    assert read_multiprocess_dir(folder) == {}
    assert json.dumps(read_multiprocess_dir(folder)) == "{}"
