"""Runs a user can leave unattended: nothing lost, interruption and resume, divergence, the same
numbers for the same seed."""
import json
import os

import pandas as pd
import pytest

import train_fastai
from train_fastai import UsageError, main, new_run_dir

TINY = ["--width", "8", "--bs", "16"]
GIVEN_LRS = ["--lr-min", "1e-4", "--lr-max", "1e-3"]


def train(folder, out, *flags):
    main([*TINY, "--data", str(folder), "--out", str(out), *map(str, flags)])
    run_dir, = (p for p in out.iterdir() if p.is_dir() and p.name.endswith("-" + flags[flags.index("--name") + 1]))
    return run_dir


def test_every_output_file_reaches_its_name_by_a_rename(tmp_path, tiny_folder, monkeypatch):
    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(train_fastai.os, "replace", lambda src, dst: renamed.append(dst.name) or real_replace(src, dst))
    run_dir = train(tiny_folder, tmp_path / "runs", *GIVEN_LRS, "--epochs", 1, "--name", "a")
    written = {p.name for p in run_dir.iterdir()}
    # history.csv is fastai's CSVLogger's: a line is flushed and synced as each epoch ends.
    assert written - {"history.csv"} <= set(renamed)
    assert {"summary.json", "model.safetensors", "classes.json", "export.pkl", "curves.png"} <= written
    assert not [name for name in written if name.endswith(".tmp")]


def test_run_folders_are_never_reused(tmp_path):
    first, second = new_run_dir(tmp_path, "same"), new_run_dir(tmp_path, "same")
    assert first != second and first.is_dir() and second.is_dir()


def test_config_is_written_before_the_finder_can_stop_the_run(tmp_path, tiny_folder, monkeypatch, capsys):
    def no_fall(*_):
        raise UsageError("the LR range test found no fall in the loss")

    monkeypatch.setattr(train_fastai, "lr_bounds", no_fall)
    with pytest.raises(SystemExit):
        main([*TINY, "--data", str(tiny_folder), "--out", str(tmp_path / "runs"), "--epochs", "1",
              "--finder-iters", "10"])
    assert "no fall in the loss" in capsys.readouterr().err
    run_dir, = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1
