"""The launcher environment -> num_nodes / devices / accumulation, and the ddp_multinode trainer config."""

from __future__ import annotations

import pytest
from hydra.utils import instantiate

from mlcost_pl.distributed.elastic import ElasticTopology, accumulation_for
from tests.helpers.cfg import compose_cfg

TORCHRUN_2x1 = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "1", "TORCHELASTIC_RUN_ID": "j", "TORCHELASTIC_RESTART_COUNT": "3"}


def test_topology_from_torchrun_slurm_and_nothing():
    t = ElasticTopology.from_env(TORCHRUN_2x1)
    assert (t.world_size, t.local_world_size, t.num_nodes, t.restart_count, t.elastic) == (2, 1, 2, 3, True)
    assert ElasticTopology.from_env({"WORLD_SIZE": "16", "LOCAL_WORLD_SIZE": "8"}).num_nodes == 2
    slurm = ElasticTopology.from_env({"SLURM_NTASKS": "8", "SLURM_NTASKS_PER_NODE": "4(x2)"})
    assert (slurm.num_nodes, slurm.local_world_size) == (2, 4)
    assert ElasticTopology.from_env({}) == ElasticTopology()


@pytest.mark.parametrize(
    ("env", "match"),
    [({"WORLD_SIZE": "3", "LOCAL_WORLD_SIZE": "2"}, "not a multiple of LOCAL_WORLD_SIZE"), ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two'"),
     ({"WORLD_SIZE": "0"}, "WORLD_SIZE='0'")],
)
def test_bad_environment_is_one_clear_line(env, match):
    with pytest.raises(ValueError, match=match):
        ElasticTopology.from_env(env)


def test_accumulation_keeps_the_global_batch():
    assert [accumulation_for(768, 128, w) for w in (1, 2, 3, 6)] == [6, 3, 2, 1]
    assert accumulation_for(None, 64, 4) == 1
    with pytest.raises(ValueError, match=r"global_batch_size=256 is not a multiple of data.batch_size x world size = 64 x 3; .*\[1, 2, 4\]"):
        accumulation_for(256, 64, 3)
    with pytest.raises(ValueError, match="global_batch_size must be a positive integer"):
        accumulation_for(0, 64, 1)


@pytest.mark.parametrize(("env", "nodes", "devices", "accum"), [({}, 1, "auto", 4), (TORCHRUN_2x1, 2, 1, 2),
                                                                ({"WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "j"}, 2, 2, 1)])
def test_ddp_multinode_config_reads_each_restart_environment(env, nodes, devices, accum, tmp_path, monkeypatch):
    for key in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_NNODES"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cfg = compose_cfg("train", ["trainer=ddp_multinode", "+global_batch_size=256", "data.batch_size=64"], tmp_path)
    assert cfg.trainer.num_nodes == nodes
    assert cfg.trainer.devices == devices
    assert cfg.trainer.accumulate_grad_batches == accum
    assert cfg.trainer.strategy.comm_hook == "none"


def test_ddp_multinode_bad_global_batch_names_the_argument(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    cfg = compose_cfg("train", ["trainer=ddp_multinode", "+global_batch_size=128", "data.batch_size=64"], tmp_path)
    with pytest.raises(Exception, match="global_batch_size=128 is not a multiple"):
        _ = cfg.trainer.accumulate_grad_batches


def test_compressed_strategy_validates_its_arguments():
    from mlcost_pl.distributed import CompressedDDPStrategy

    with pytest.raises(ValueError, match="comm_hook must be one of none, fp16, bf16, powersgd, got 'int8'"):
        CompressedDDPStrategy(comm_hook="int8")
    with pytest.raises(ValueError, match="powersgd_start_iter must be an integer >= 2"):
        CompressedDDPStrategy(comm_hook="powersgd", powersgd_start_iter=1)
    assert instantiate({"_target_": "mlcost_pl.distributed.CompressedDDPStrategy", "comm_hook": "bf16"}).comm_hook == "bf16"
