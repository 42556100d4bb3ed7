"""Runs a user can leave unattended: nothing lost, interruption and resume, divergence, the same
numbers for the same seed."""
import json
import os
import pickle
import re
import subprocess
import sys
import signal

import pandas as pd
import pytest
import torch

import files
import train_fastai
from fastai.callback.core import Callback
from conftest import REPO
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
    monkeypatch.setattr(files.os, "replace", lambda src, dst: renamed.append(dst.name) or real_replace(src, dst))
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


class SigtermAt(Callback):
    """Sends this process SIGTERM at one training iteration, as a job scheduler would."""
    def __init__(self, epoch, iteration):
        self.at = (epoch, iteration)

    def before_batch(self):
        if self.training and (self.epoch, self.iter) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def history_values(run_dir):
    return pd.read_csv(run_dir / "history.csv").drop(columns="time")


def test_sigterm_saves_a_checkpoint_and_resume_joins_schedule_and_history(tmp_path, tiny_folder, monkeypatch, capsys):
    out = tmp_path / "runs"
    whole = train(tiny_folder, out, *GIVEN_LRS, "--epochs", 2, "--name", "whole")

    real_make_learner = train_fastai.make_learner
    monkeypatch.setattr(train_fastai, "make_learner",
                        lambda *a: real_make_learner(*a).add_cb(SigtermAt(epoch=1, iteration=2)))
    with pytest.raises(SystemExit) as e:
        train(tiny_folder, out, *GIVEN_LRS, "--epochs", 2, "--name", "cut")
    assert e.value.code == 130
    cut, = out.glob("*-cut")
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.endswith(f"Resume with: python train_fastai.py --resume {cut}")
    assert len(pd.read_csv(cut / "history.csv")) == 1  # epoch 1 finished, epoch 2 did not
    assert (cut / "checkpoint.pth").is_file() and not (cut / "summary.json").exists()
    monkeypatch.setattr(train_fastai, "make_learner", real_make_learner)

    with pytest.raises(SystemExit) as e:
        main(["--resume", str(cut), "--epochs", "5"])
    assert e.value.code == 2 and "was run with --epochs 2, not 5" in capsys.readouterr().err

    main(["--resume", str(cut)])
    pd.testing.assert_frame_equal(pd.read_csv(cut / "lr_schedule.csv"), pd.read_csv(whole / "lr_schedule.csv"))
    history = history_values(cut)
    assert list(history.epoch) == [0, 1]
    # Epoch 1 was trained before the interruption, with the same seed as the whole run.
    pd.testing.assert_frame_equal(history.iloc[:1], history_values(whole).iloc[:1])
    assert (cut / "model.safetensors").is_file() and not (cut / "checkpoint.pth").exists()
    assert json.loads((cut / "summary.json").read_text())["final_accuracy"] == pytest.approx(history.accuracy.iloc[-1])


def test_a_diverging_loss_stops_the_run_naming_the_lr(tmp_path, tiny_folder, capsys):
    with pytest.raises(SystemExit) as e:
        train(tiny_folder, tmp_path / "runs", "--lr-min", 10, "--lr-max", 1000, "--epochs", 2, "--name", "hot")
    assert e.value.code == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the loss diverged" in message and "LR is likely too high" in message
    assert 10 <= float(re.search(r"LR ([0-9.e+-]+):", message).group(1)) <= 1000
    run_dir, = (tmp_path / "runs").iterdir()
    assert (run_dir / "config.json").is_file() and (run_dir / "history.csv").is_file()


def test_the_same_seed_gives_the_same_history_on_the_cpu(tmp_path, tiny_folder):
    out = tmp_path / "runs"
    first = train(tiny_folder, out, *GIVEN_LRS, "--epochs", 1, "--seed", 3, "--name", "first")
    try:
        second = train(tiny_folder, out, *GIVEN_LRS, "--epochs", 1, "--seed", 3, "--deterministic", "--name", "second")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    pd.testing.assert_frame_equal(history_values(first), history_values(second), check_exact=True)
    assert json.loads((second / "config.json").read_text())["deterministic"] is True


def test_two_processes_train_data_parallel_and_one_writes_the_run(tmp_path, tiny_folder):
    """What `accelerate launch --num_processes 2` starts, on CPUs (gloo): torch's launcher."""
    out = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           str(REPO / "train_fastai.py"), "--data", str(tiny_folder), "--out", str(out), *TINY,
                           "--epochs", "1", "--finder-iters", "10"], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir, = (p for p in out.iterdir() if p.is_dir())  # one run folder, written by the main process
    assert "data-parallel: 2 processes x 8 = an effective batch of 16" in done.stdout
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["effective_bs"] == 16
    assert len(pd.read_csv(run_dir / "history.csv")) == 1
    assert json.loads((run_dir / "config.json").read_text())["lr_source"] == "lr_find.json"  # the main's finder
    assert len(pd.read_csv(run_dir / "lr_schedule.csv")) == 80 // 16  # steps of the effective batch
    assert (run_dir / "model.safetensors").is_file()


def test_a_group_of_runs_is_refused_under_several_processes(tmp_path, tiny_folder, monkeypatch, capsys):
    """Every process would write the group folder; the user is told to launch the runs one by one."""
    monkeypatch.setattr(train_fastai, "num_distrib", lambda: 2)
    with pytest.raises(SystemExit) as e:
        train(tiny_folder, tmp_path / "runs", *GIVEN_LRS, "--epochs", 1, "--runs", 2, "--name", "group")
    assert e.value.code == 2
    assert "--runs and --sweep run one process at a time" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path):
    """checkpoint.pth is read with torch.load(weights_only=True): a pickle that names a function
    is refused before it runs."""
    from fastai.test_utils import synth_learner
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (tmp_path / "checkpoint.pth").write_bytes(pickle.dumps(Payload(), protocol=2))  # torch.save's protocol
    (tmp_path / "checkpoint.json").write_text(json.dumps({"epochs_done": 1}))
    with pytest.raises(UsageError, match="checkpoint.pth cannot be loaded"):
        train_fastai.load_checkpoint(synth_learner(), tmp_path)
    assert not marker.exists()


def test_cudnn_autotunes_unless_the_run_must_repeat_bitwise():
    try:
        train_fastai.seed_everything(0, deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        train_fastai.seed_everything(0, deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = torch.backends.cudnn.benchmark = False
