"""Interruption and resume."""
import json
import os
import pickle
import re
import shutil
import signal

import pandas as pd
import pytest
from fastai.callback.core import Callback

import train_fastai
from cifar10_fast.core.config import UsageError
from cifar10_fast.core.errors import command_to_retype
from cifar10_fast.training.fit import load_checkpoint
from tests.conftest import GIVEN_LRS, REPO, history_values, train, write_folder, write_tgz
from train_fastai import main


class SigtermAt(Callback):
    """Sends this process SIGTERM at one training iteration, as a job scheduler would."""
    def __init__(self, epoch, iteration):
        self.at = (epoch, iteration)

    def before_batch(self):
        if self.training and (self.epoch, self.iter) == self.at:
            os.kill(os.getpid(), signal.SIGTERM)


def test_sigterm_saves_a_checkpoint_and_resume_joins_schedule_and_history(tmp_path, tiny_folder, monkeypatch, capsys):
    out = tmp_path / "runs"
    archive = write_tgz(tiny_folder, tmp_path / "cifar10.tgz", "cifar10")
    whole = train(archive, out, *GIVEN_LRS, "--epochs", 2, "--name", "whole")

    real_make_learner = train_fastai.make_learner
    monkeypatch.setattr(train_fastai, "make_learner",
                        lambda *a: real_make_learner(*a).add_cb(SigtermAt(epoch=1, iteration=2)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CIFAR10_CACHE", "relative-cache")  # the folder it unpacks to is recorded whole
    with pytest.raises(SystemExit) as e:
        train(archive, out, *GIVEN_LRS, "--epochs", 2, "--name", "cut", "--tta", "--target-acc", 0.99)
    assert e.value.code == 130
    cut, = out.glob("*-cut")
    assert json.loads((cut / "config.json").read_text())["data"].startswith(str(tmp_path / "relative-cache"))
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.endswith(f"Resume with: {command_to_retype(REPO / 'train_fastai.py')} --resume {cut}")
    assert len(pd.read_csv(cut / "history.csv")) == 1  # epoch 1 finished, epoch 2 did not
    assert (cut / "checkpoint.pth").is_file() and not (cut / "summary.json").exists()
    monkeypatch.setattr(train_fastai, "make_learner", real_make_learner)

    with pytest.raises(SystemExit) as e:
        main(["--resume", str(cut), "--epochs", "5"])
    assert e.value.code == 2 and "was run with --epochs 2, not 5" in capsys.readouterr().err

    with pytest.raises(SystemExit) as e:
        main(["--resume", str(cut), "--data", str(write_folder(tmp_path / "other", n_train=9))])
    assert e.value.code == 2 and f"{cut} was run on other data" in capsys.readouterr().err

    # From another folder, the cache cleaned meanwhile and another one set: the run unpacks the
    # archive it was given again, the same data, compared by content; the index row goes to the
    # run's own --out, which config.json keeps.
    shutil.rmtree(tmp_path / "relative-cache")
    monkeypatch.setenv("CIFAR10_CACHE", str(tmp_path / "another-cache"))
    monkeypatch.chdir(tmp_path / "other")
    main(["--resume", str(cut)])
    # The estimate counts the one epoch left (5 batches of 16), its test pass and flip TTA's mirrored
    # one (--tta, taken back from config.json).
    printed = capsys.readouterr().out
    assert "(80 training images at" in printed and "and 40 test images at" in printed
    # Its fit's seconds are of both sessions, more than this one's whole time perhaps: said as such.
    summary = json.loads((cut / "summary.json").read_text())
    last = printed.strip().splitlines()[-1]
    assert re.search(rf"after 2 epochs, fit {summary['fit_seconds']:.1f} s in all its sessions, this one "
                     rf"{sum(summary['phases'].values()):.1f} s; outputs in ", last), last
    assert cut.name in pd.read_csv(out / "index.csv").run.tolist() and not (tmp_path / "other" / "runs").exists()
    config = json.loads((cut / "config.json").read_text())
    assert config["out"] == str(out) and config["data_given"] == str(archive)
    assert (config["name"], config["tta"], config["target_acc"]) == ("cut", True, 0.99)  # not the flags' defaults
    assert "tta_accuracy" in json.loads((cut / "summary.json").read_text())
    assert pd.read_csv(out / "index.csv").set_index("run").loc[cut.name, "name"] == "cut"
    pd.testing.assert_frame_equal(pd.read_csv(cut / "lr_schedule.csv"), pd.read_csv(whole / "lr_schedule.csv"))
    history = history_values(cut)
    assert list(history.epoch) == [0, 1]
    # Epoch 1 was trained before the interruption, with the same seed as the whole run.
    pd.testing.assert_frame_equal(history.iloc[:1], history_values(whole).iloc[:1])
    assert (cut / "model.safetensors").is_file() and not (cut / "checkpoint.pth").exists()
    assert json.loads((cut / "summary.json").read_text())["final_accuracy"] == pytest.approx(history.accuracy.iloc[-1])


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
        load_checkpoint(synth_learner(), tmp_path)
    assert not marker.exists()


def test_a_run_resumed_from_inside_its_folder_is_indexed_by_its_name_in_its_out(tmp_path, tiny_folder, monkeypatch,
                                                                                capsys):
    """`--resume .` wrote index.csv inside the run folder, its row named ''."""
    out = tmp_path / "runs"
    real_make_learner = train_fastai.make_learner
    monkeypatch.setattr(train_fastai, "make_learner",
                        lambda *a: real_make_learner(*a).add_cb(SigtermAt(epoch=1, iteration=2)))
    with pytest.raises(SystemExit):
        train(tiny_folder, out, *GIVEN_LRS, "--epochs", 2, "--name", "cut")
    monkeypatch.setattr(train_fastai, "make_learner", real_make_learner)
    cut, = out.glob("*-cut")
    monkeypatch.chdir(cut)
    main(["--resume", "."])
    assert pd.read_csv(out / "index.csv").run.tolist() == [cut.name] and not (cut / "index.csv").exists()
