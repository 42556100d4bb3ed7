import json

import pandas as pd
import pytest
import torch
from fastai.vision.all import Learner

import hardware
from conftest import GIVEN_LRS, history_values, train
from customresnet import CustomResNet
from data import cifar10_dataloaders
from hardware import seed_everything
from settings import UsageError


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


def test_cudnn_autotunes_unless_the_run_must_repeat_bitwise():
    try:
        seed_everything(0, deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = torch.backends.cudnn.benchmark = False


def test_the_cpu_estimate_counts_the_finder_the_epochs_to_run_and_the_passes_after_the_fit(tiny_folder, monkeypatch,
                                                                                           capsys):
    """Rates stubbed: 100 training and 1,000 test images a second."""
    dls, _ = cifar10_dataloaders(tiny_folder, bs=16, device="cpu")  # 5 batches of 16, 20 test images
    monkeypatch.setattr(hardware, "images_per_second", lambda model, images, train: 100 if train else 1000)
    learn = Learner(dls, CustomResNet(width=8))
    capsys.readouterr()  # the decoding line
    # 100 finder iterations (never a test pass), 2 epochs, then the interpretation's and flip TTA's 3 passes.
    hardware.print_cpu_estimate(learn, learn.model, finder_iters=100, epochs=2, final_passes=3)
    assert capsys.readouterr().out.strip() == ("CPU only: this run will take about 18 s (1760 training images at "
                                               "100/s and 100 test images at 1000/s here); a GPU takes seconds")


def test_a_gpu_index_beyond_the_machine_is_one_line_not_an_invalid_ordinal(monkeypatch):
    """torch.device("cuda:3") is a device on a machine with one GPU; the first tensor moved there
    fails with "invalid device ordinal", a traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert hardware.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UsageError, match=r"--device cuda:3: the CUDA GPUs here are cuda:0 to cuda:1: give one of them"):
        hardware.resolve_device("cuda:3")
