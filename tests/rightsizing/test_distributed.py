"""All ranks agree on the batch size: the minimum over 2 real CPU processes (gloo)."""

from __future__ import annotations

import os
import socket

import torch.multiprocessing as mp

from mlcost_pl.rightsizing.search import max_fit_search, min_over_ranks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, limits: list[int], out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        mine = max_fit_search(lambda b: b <= limits[rank], init=32, safety_margin=0.0).batch_size
        agreed = min_over_ranks(mine)
        with open(f"{out}.{rank}", "w") as f:
            f.write(f"{mine} {agreed}")
    finally:
        dist.destroy_process_group()


def test_two_ranks_take_the_minimum(tmp_path):
    limits = [300, 200]  # e.g. one GPU already holds more memory
    # fork: the children inherit the imported torch (spawn would re-import it, ~10x slower here)
    mp.start_processes(_worker, args=(_free_port(), limits, str(tmp_path / "r")), nprocs=2, join=True, start_method="fork")
    got = [tuple(map(int, (tmp_path / f"r.{r}").read_text().split())) for r in range(2)]
    assert got[0][0] > got[1][0]  # the ranks found different sizes ...
    assert got[0][1] == got[1][1] == got[1][0]  # ... and both use the smaller


def test_without_a_process_group_it_is_the_identity():
    assert min_over_ranks(17) == 17
