"""The recipes' summary tables: sized to the terminal, never cutting a path."""

from __future__ import annotations

from mlcost_pl.summary import print_summary


def test_long_paths_are_printed_whole_outside_a_terminal(capsys):
    path = "/tmp/" + "/".join(f"folder{i}" for i in range(30)) + "/checkpoints"  # ~250 characters
    text = print_summary("mlcost_pl train", [("checkpoints", path), ("test accuracy", 0.5)])
    assert path in text and path in capsys.readouterr().out
