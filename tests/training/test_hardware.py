import json
import subprocess
import sys

import pandas as pd
import pytest
import torch
from fastai.vision.all import Learner

from cifar10_fast.core.config import UsageError
from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.training import hardware
from cifar10_fast.training.hardware import seed_everything
from customresnet import CustomResNet
from tests.conftest import GIVEN_LRS, REPO, history_values, train


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
        seed_everything(0, deterministic=False)  # the next run of a group
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
        torch.backends.cudnn.deterministic = torch.backends.cudnn.benchmark = False


def test_seeding_a_run_that_need_not_repeat_bitwise_leaves_torchs_compiler_unloaded():
    """torch.use_deterministic_algorithms loads torch._dynamo: 2 s of every run on 2 cores, until
    torch's optimizer loads it for the fit (the run makes it with the learner, before the fit)."""
    script = ("import sys; from cifar10_fast.training import hardware; hardware.seed_everything(0, False); "
              "print('torch._dynamo' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout == "False\n", done.stderr


def test_the_cpu_estimate_comes_from_the_runs_first_batches_once(tiny_folder, capsys):
    """Printed once, after the first training batches of the first fit (the range test's or the
    training's), counting the finder, the epochs still to run and the passes over the test set after
    the fit; then it leaves the learner, so no later fit prints it again and the export does not
    carry it."""
    dls, _ = cifar10_dataloaders(tiny_folder, bs=16, device="cpu")  # 5 batches of 16, 20 test images
    learn = Learner(dls, CustomResNet(width=8))
    estimate = hardware.CpuEstimate(finder_iters=100, epochs=2, final_passes=1, enough_seconds=float("inf"))
    learn.add_cb(estimate)
    capsys.readouterr()  # the decoding line
    with learn.no_logging(), learn.no_bar():
        learn.fit(1)
    printed = capsys.readouterr().out.splitlines()
    # 100 finder iterations and 2 epochs of 5 batches of 16; 2 epochs' test passes and flip TTA's, of 20 images.
    assert len(printed) == 1 and printed[0].startswith("CPU only: this run will take about ")
    assert "(1760 training images at " in printed[0] and " and 60 test images at " in printed[0]
    assert len(estimate.batches) == 4 and estimate not in learn.cbs  # the first batch and 3 timed ones


def test_the_cpu_estimate_leaves_a_fit_that_trained_nothing_without_a_word(tiny_folder, capsys):
    """A resumed run whose fit was done skips every epoch: nothing to time, nothing printed, and
    nothing of the callback left to be exported."""
    dls, _ = cifar10_dataloaders(tiny_folder, bs=16, device="cpu")
    learn = Learner(dls, CustomResNet(width=8))
    estimate = hardware.CpuEstimate(finder_iters=0, epochs=0, final_passes=0)
    learn.add_cb(estimate)
    capsys.readouterr()  # the decoding line
    with learn.no_logging(), learn.no_bar():
        learn.fit(1, start_epoch=1)
    assert estimate not in learn.cbs and estimate.batches == [] and capsys.readouterr().out == ""


def test_the_cpu_estimate_counts_compiling_and_says_so():
    # 1,760 images at 100/s and 100 at 1,000/s: 18 s, and 40 s compiling.
    assert hardware.estimate_line(1760, 100, 100, 1000, 0) == (
        "CPU only: this run will take about 18 s (1760 training images at 100/s and 100 test images at 1000/s, "
        "timed on its first training batches)")
    assert hardware.estimate_line(1760, 100, 100, 1000, 40) == (
        "CPU only: this run will take about 58 s (1760 training images at 100/s and 100 test images at 1000/s, "
        "timed on its first training batches; and 40 s compiling the model, more for its first test pass)")


def test_the_cpu_estimate_of_a_range_test_alone_counts_no_test_images():
    """--find-lr tests nothing: "0 test images" was no estimate of anything."""
    assert hardware.estimate_line(1600, 0, 100, 1000, 0) == (
        "CPU only: this run will take about 16 s (1600 training images at 100/s, timed on its first training batches)")


def test_a_run_of_under_a_second_is_not_estimated_at_about_0_s():
    assert hardware.estimate_line(16, 4, 100, 1000, 0).startswith("CPU only: this run will take under a second (")


def test_a_gpu_index_beyond_the_machine_is_one_line_not_an_invalid_ordinal(monkeypatch):
    """torch.device("cuda:3") is a device on a machine with one GPU; the first tensor moved there
    fails with "invalid device ordinal", a traceback."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert hardware.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(UsageError, match=r"--device cuda:3: the CUDA GPUs here are cuda:0 to cuda:1: give one of them"):
        hardware.resolve_device("cuda:3")


def test_the_versions_of_a_run_name_a_library_it_lacks_as_none(monkeypatch):
    real_version = hardware.metadata.version

    def version(name):
        if name == "albumentations":
            raise hardware.metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(hardware.metadata, "version", version)
    versions = hardware.library_versions()
    assert versions["albumentations"] is None and versions["fastai"] == real_version("fastai")
