from __future__ import annotations

import pytest
import torch

from mlcost_pl.utils.threads import torch_threads


def test_torch_threads_sets_and_restores():
    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with torch_threads(None):
        assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True])
def test_torch_threads_bad_value_is_named(bad):
    with pytest.raises(ValueError, match="torch_threads"):
        with torch_threads(bad):
            pass
