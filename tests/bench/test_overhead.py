"""bench/overhead.py on the CPU (--smoke): both sides fit and are profiled, and the results file holds
every figure BENCHMARKS.md reads. Its figures mean nothing: no speed is asserted."""
import copy
import json
import statistics
import subprocess
import sys

import pytest
import torch

from bench import overhead
from cifar10_fast.core import settings
from customresnet import CustomResNet
from tests.conftest import REPO, one_line_error


def test_smoke_writes_every_figure(tmp_path):
    out = tmp_path / "results"
    overhead.main(["--smoke", "--out", str(out)])
    results_file, = out.glob("*.json")
    assert results_file.stem.startswith("overhead-")
    results = json.loads(results_file.read_text())
    assert results["smoke"] is True and results["finished"] and results["git_commit"]
    assert results["device"] and results["versions"]["torch"] and results["precision"] == "fp32"
    assert results["settings"] == overhead.SMOKE and results["threads"] == overhead.SMOKE["threads"]
    assert results["seeds"] == {"data": 0, "ours": 0, "plain": 0}

    repeats = results["repeats"]
    assert [(r["side"], r["repeat"], r["warmup"]) for r in repeats] == [
        (side, repeat, repeat == 0) for repeat in range(overhead.SMOKE["repeats"] + 1) for side in overhead.SIDES]
    steps = overhead.SMOKE["epochs"] * overhead.SMOKE["train_batches"]
    for r in repeats:
        assert r["steps"] == steps and r["fit_s"] > 0 and 0 <= r["accuracy"] <= 1
        assert r["ms_per_step"] == pytest.approx(1000 * r["fit_s"] / steps)
    for side in overhead.SIDES:
        timed = [r["ms_per_step"] for r in repeats if r["side"] == side and not r["warmup"]]
        assert results["ms_per_step"][side] == pytest.approx({"median": statistics.median(timed), "min": min(timed)})
    ours, plain = results["ms_per_step"]["ours"], results["ms_per_step"]["plain"]
    assert results["ratio"]["median"] == pytest.approx(ours["median"] / plain["median"])
    assert results["extra_ms_per_step"]["min"] == pytest.approx(ours["min"] - plain["min"])

    counts = results["operators_per_step"]
    for side in overhead.SIDES:
        assert 0 < counts[side]["aten_ops"] == pytest.approx(sum(counts[side]["by_operator"].values()))
        assert counts[side]["aten_ops_nested_included"] >= counts[side]["aten_ops"]
        assert counts[side]["scalar_reads"] >= 0 and counts[side]["cuda_kernels"] is None  # no GPU here
    extra = results["extra_operators"]
    assert len(extra) <= overhead.SMOKE["top"] and [row["extra"] for row in extra] == sorted(
        (row["extra"] for row in extra), reverse=True)
    for row in extra:
        assert row["ours"] == counts["ours"]["by_operator"][row["operator"]]
        assert row["plain"] == counts["plain"]["by_operator"].get(row["operator"], 0)
        assert row["extra"] == pytest.approx(row["ours"] - row["plain"]) and row["extra"] > 0

    log = results_file.with_suffix(".log").read_text()
    assert "plain epoch 2" in log and "final test accuracy" in log and "ms per training step" in log


def test_plain_applies_the_augmentations(tmp_path):
    """augment.py's transforms dispatch on TensorImage: plain must hand them one, or they pass its
    batch through untouched."""
    args = overhead.parse_args(["--smoke", "--out", str(tmp_path)])
    data = {split: (torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.arange(10)) for split in ("train", "test")}
    plain = overhead.PlainFit(args, "fp32", data, torch.device("cpu"))
    augmented = plain.augment(torch.rand(16, 3, 32, 32) + 1)
    assert type(augmented) is torch.Tensor  # the model gets a plain tensor, as from fastai's CastToTensor
    assert ((augmented == 0).all(1).sum((1, 2)) == 8 * 8).all()  # Cutout's square in every image


def toy_fit(model, epochs=2, steps_per_epoch=6):
    """A loop that trains `model` on nothing, marking each step with an operator of its own: ones in
    the first epoch, full in the later ones; before it, a copy runs a few steps outside the fit."""
    images = torch.zeros(2, 3, 32, 32)
    estimate = copy.deepcopy(model).train()
    for _ in range(5):
        torch.eye(1)
        estimate(images)
    for epoch in range(epochs):
        model.train()
        for _ in range(steps_per_epoch):
            torch.ones(1) if epoch == 0 else torch.full((1,), 1.0)
            model(images)
        model.eval()
        model(images)


def test_profile_window_holds_whole_steps_of_the_second_epoch():
    counts = overhead.profile_training_steps(lambda: toy_fit(CustomResNet(width=1)), torch.device("cpu"),
                                             warmup=2, steps=3)
    assert counts["by_operator"]["aten::full"] == 1  # one marker a step: whole steps, each once
    assert "aten::ones" not in counts["by_operator"] and "aten::eye" not in counts["by_operator"]


@pytest.mark.parametrize("epochs, message", [(1, "ended before"), (2, "reached a test pass")])
def test_profile_window_must_fit_in_the_second_epoch(epochs, message):
    with pytest.raises(RuntimeError, match=message):
        overhead.profile_training_steps(lambda: toy_fit(CustomResNet(width=1), epochs, steps_per_epoch=4),
                                        torch.device("cpu"), warmup=2, steps=3)


def test_smoke_needs_an_out_folder(capsys):
    with pytest.raises(SystemExit) as e:
        overhead.parse_args(["--smoke"])
    assert e.value.code == 2 and "never written into bench/results" in capsys.readouterr().err


@pytest.mark.parametrize("argv,text", [
    (["--width", "0"], "--width must be positive, not 0"),
    (["--width", "x"], "--width: invalid int value: 'x'"),
    (["--threads", "0"], "--threads must be at least 1, not 0"),
    (["--threads", "999"], "--threads 999 is more than the"),
    (["--lr-min", "nan"], "--lr-min must be a finite number, not nan"),
    (["--lr-min", "1e-2", "--lr-max", "1e-3"], "--lr-min (0.01) must be below --lr-max (0.001)"),
    (["--seed", "-1"], "--seed must lie in [0,"),
    (["--profile-warmup", "-1"], "--profile-warmup must not be negative, not -1"),
])
def test_a_bad_flag_is_one_line_and_writes_nothing(argv, text, tmp_path, capsys):
    out = tmp_path / "results"
    assert text in one_line_error(overhead.main, ["--smoke", "--out", str(out), *argv], capsys)
    assert not out.exists()  # no overhead-*.json/.log pair of a run that never was


def test_an_out_that_is_a_file_is_one_line_and_kept(tmp_path, capsys):
    mine = tmp_path / "mine.txt"
    mine.write_text("precious")
    assert f"--out {mine} is not a folder" in one_line_error(overhead.main, ["--smoke", "--out", str(mine)], capsys)
    assert mine.read_text() == "precious"


def test_help_shows_no_library_warning():
    """fastai's import warns that torch.jit.script is deprecated: nothing a user of the bench can act on."""
    done = subprocess.run([sys.executable, "-m", "bench.overhead", "--help"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stderr == "" and "--threads" in done.stdout


def test_cuda_without_a_gpu_is_one_line_before_or_after_torch_loads(tmp_path, monkeypatch, capsys):
    """Without torch where the machine shows no GPU at all, else when torch finds none."""
    out = tmp_path / "results"
    argv = ["--smoke", "--out", str(out), "--device", "cuda"]
    monkeypatch.setattr(settings, "no_cuda_here", lambda: True)
    assert one_line_error(overhead.main, argv, capsys).startswith("error: --device cuda: no CUDA GPU is visible here")
    monkeypatch.setattr(settings, "no_cuda_here", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert one_line_error(overhead.main, argv, capsys) == ("error: --device cuda: no CUDA GPU is visible here; use "
                                                           "--device cpu")
    assert not out.exists()
