"""Every option of every config group composes and instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from mlcost_pl.config import instantiate_group, run_name_from_overrides
from tests.helpers.cfg import CONFIG_DIR, compose_cfg

GROUPS_BUILT_ELSEWHERE = {"hydra", "paths", "experiment", "debug"}
# Groups composed by another recipe's config than train.yaml: group -> that config.
OWNER = {"rules": "storage", "deploy": "serve"}
NEEDS = {("data", "imagefolder"): ["data.root={images}"], ("data", "cifar10"): []}


def _options() -> list[tuple[str, str]]:
    out = []
    for group in sorted(p for p in Path(CONFIG_DIR).iterdir() if p.is_dir()):
        for yaml in sorted(group.glob("*.yaml")):
            out.append((group.name, yaml.stem))
    return out


@pytest.mark.parametrize(("group", "option"), _options())
def test_every_option_composes_and_instantiates(group, option, tmp_path, image_folder, request):
    overrides = [f"{group}={option}"] if group != "hydra" else []
    if (group, option) == ("data", "streaming"):  # an optimized dataset to stream (tests/conftest.py)
        overrides.append(f"data.uri={request.getfixturevalue('digits_optimized')[0]}")
    overrides += [o.format(images=image_folder) for o in NEEDS.get((group, option), [])]
    cfg = compose_cfg(OWNER.get(group, "train"), overrides, tmp_path)
    if group == "rules":
        from omegaconf import OmegaConf

        from mlcost_pl.storage import StoragePrices, parse_rules

        assert parse_rules(OmegaConf.to_container(cfg.rules), StoragePrices.bundled().provider("aws"))
        return
    if group == "deploy":
        from mlcost_pl.serve.deploy import DeploySettings

        options = {k: v for k, v in cfg.deploy.items() if k not in ("target", "out")}
        assert cfg.deploy.target == option and (not options or DeploySettings.from_dict(dict(options)))
        return
    if group in GROUPS_BUILT_ELSEWHERE:
        assert cfg.trainer and cfg.model
        return
    node = cfg[group]
    if group in ("callbacks", "logger"):
        objs = instantiate_group(node, group)
        assert all(o is not None for o in objs)
    elif group == "data" and option == "cifar10":
        dm = instantiate(node)  # construction only: setup() would download
        assert dm.num_classes == 10
    elif group == "trainer" and node.accelerator == "gpu" and not torch.cuda.is_available():
        assert node.precision == "bf16-mixed"  # composes; building it needs a GPU (run with -m gpu there)
    elif group == "model":
        assert instantiate(node, num_classes=3).head is not None
    elif group in ("optimizer", "scheduler"):
        assert not node or callable(instantiate(node))
    else:
        assert instantiate(node) is not None


def test_runnable_yamls_start_with_their_command():
    for sub in ("experiment", "debug"):
        for yaml in Path(CONFIG_DIR, sub).glob("*.yaml"):
            # Hydra needs `# @package` as the very first line; the command follows in the same header block.
            header = []
            for line in yaml.read_text().splitlines():
                if not line.startswith("#"):
                    break
                header.append(line)
            assert any(h.startswith("# uv run python -m recipes.") for h in header), f"{yaml} must start with its command"


def test_unknown_group_option_is_named(tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="nosuchmodel"):
        compose_cfg("train", ["model=nosuchmodel"], tmp_path)


def test_unknown_key_is_named(tmp_path):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match="no_such_key"):
        compose_cfg("train", ["trainer.no_such_key=1"], tmp_path)


def test_run_name_is_stable_and_safe():
    assert run_name_from_overrides("") == "default"
    long = ",".join(f"k{i}=v{i}" for i in range(40))
    name = run_name_from_overrides(long)
    assert len(name) == 80 and name == run_name_from_overrides(long)
    assert "/" not in run_name_from_overrides("data.root=/x/y")
