"""Serve an export: ``uv run python -m recipes.serve model_dir=<export folder> [serve.*=...]``.

Reads top to bottom: check and load the export (manifest hashes, variant timed on this host), build the LitServe
server, print what serves and where, run until SIGTERM (drain, exit 0). ``deploy=k8s deploy.out=<dir>`` writes
Kubernetes manifests instead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from mlcost_pl.config import register_resolvers
from mlcost_pl.errors import UserInputError
from mlcost_pl.summary import print_summary
from recipes._cli import run_cli

register_resolvers()


def write_manifests(cfg: DictConfig) -> list[str]:
    """``deploy=k8s``: write the manifests to ``deploy.out``."""
    from mlcost_pl.serve.deploy import DeploySettings, write_k8s_manifests

    options = OmegaConf.to_container(cfg.deploy, resolve=True)
    options.pop("target")
    out = options.pop("out")
    if not out:
        raise UserInputError("deploy.out is required with deploy=k8s: deploy.out=<folder for the manifests>")
    paths = write_k8s_manifests(DeploySettings.from_dict(options), out)
    print_summary("mlcost_pl serve deploy=k8s", [("wrote", str(p)) for p in paths])
    return [str(p) for p in paths]


def serve(cfg: DictConfig) -> Any:
    """Serve ``cfg.model_dir`` (or write manifests); returns the server after it drained."""
    if cfg.deploy.target == "k8s":
        return write_manifests(cfg)
    if not cfg.get("model_dir"):
        raise UserInputError("model_dir is required: model_dir=<the folder recipes.export wrote>")
    from mlcost_pl.serve.model import load_export
    from mlcost_pl.serve.server import ModelServer, ServeSettings

    options = OmegaConf.to_container(cfg.serve, resolve=True)
    model = load_export(cfg.model_dir, variant=options.pop("variant"), threads=options.pop("threads"),
                        labels=options.pop("labels"))
    server = ModelServer(model, ServeSettings(**options))
    url = f"http://{cfg.host}:{cfg.port}"
    print_summary("mlcost_pl serve", [
        ("model", f"{cfg.model_dir} (version {model.version})"),
        ("variant", f"{model.variant}: {model.reason}"),
        ("batching", f"{server.settings.batching}, slo {server.settings.slo_ms:g} ms, max batch "
                     f"{server.settings.max_batch_size}"),
        ("cache", "off" if not server.settings.cache.get("enabled", True) else
         f"local LRU{' + Redis ' + server.settings.cache['url'] if server.settings.cache.get('url') else ''}"),
        ("price", f"${server.price_per_hour:.4f}/h ({server.settings.instance}, {server.settings.market})"),
        ("predict", f"POST {url}/predict"),
        ("docs", f"{url}/docs  (/health /ready /metrics)"),
    ])
    server.run(host=cfg.host, port=int(cfg.port), log_level=cfg.log_level)
    print(f"drained: {server.drain_result}" if server.drain_result else "stopped", flush=True)
    return server


@hydra.main(version_base="1.3", config_path="../configs", config_name="serve")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = run_cli(serve, cfg)
    drained = getattr(result, "drain_result", None)
    if drained is not None:
        # Every request is answered and every child has exited: skip the interpreter's teardown (seconds of garbage
        # collection on a loaded machine), so the exit lands inside serve.drain_seconds.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1 if drained.get("worker_died") else 0)


if __name__ == "__main__":
    main()
