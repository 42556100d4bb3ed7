"""The bench harness on tiny data on the CPU (--smoke): every row is run or honestly skipped, and the
results file holds what BENCHMARKS.md reads. Its figures mean nothing and are asserted nowhere."""
import json
import subprocess
import sys

import pytest
import torch

from bench import (
    airbench94,
    bench,
    seed_style,
)
from bench.tensors import data_tensors
from cifar10_fast.core.config import RECIPE
from customresnet import CustomResNet
from tests.conftest import REPO, one_line_error

RUN_FIELDS = {"seed", "accuracy", "fit_s", "total_s", "images_per_s", "peak_gpu_mib"}


def test_smoke_bench_writes_every_row_and_field(tmp_path, tiny_folder, capsys):
    out = tmp_path / "results"
    bench.main(["--smoke", "--data", str(tiny_folder), "--out", str(out), "--profile"])
    results_file, = out.glob("*.json")
    assert results_file.stem.startswith("cpu-smoke-")
    results = json.loads(results_file.read_text())
    log = results_file.with_suffix(".log").read_text()
    assert "ours, seed 1" in log and "airbench94: skipped" in log
    assert results["smoke"] is True and results["finished"]
    for key in ("command", "device", "driver", "versions", "seeds", "bf16_matmul_tflops", "model_flops_per_image"):
        assert key in results
    assert results["bf16_matmul_tflops"] > 0 and results["versions"]["torch"]
    rows = {row["row"]: row for row in results["rows"]}
    assert list(rows) == list(bench.ROWS)

    ours = rows["ours"]
    assert ours["status"] == "ok" and [r["seed"] for r in ours["runs"]] == [0, 1]
    for run in ours["runs"]:
        assert RUN_FIELDS | {"mfu", "model_tflop", "lr_min", "lr_max"} <= set(run)
        # a bf16 peak against fp32 work on a CPU: no upper bound on the MFU
        assert 0 <= run["accuracy"] <= 1 and 0 < run["fit_s"] < run["total_s"] and run["mfu"] > 0
    assert ours["accuracy_std"] is not None and ours["ratio_to_ours"]["fit_s"] == pytest.approx(1)

    for name in ("seed-style", "fastai-stock"):
        row = rows[name]
        assert row["status"] == "ok" and len(row["runs"]) == 1 and RUN_FIELDS <= set(row["runs"][0])
        assert row["accuracy_std"] is None  # one run has no spread
        assert row["ratio_to_ours"]["fit_s"] == pytest.approx(row["fit_s_mean"] / ours["fit_s_mean"])

    airbench = rows["airbench94"]
    assert airbench["status"] == "skipped" and "CUDA" in airbench["reason"] and airbench["runs"] == []
    assert "accuracy_mean" not in airbench  # a skipped row has no figures, never made-up ones

    profile = (out / f"{results_file.stem}-profile.txt").read_text()
    assert "training steps of ours" in profile and "aten::" in profile


def test_airbench_reads_the_files_we_write(tmp_path, tiny_folder):
    """airbench's own loader takes our copy: uint8 NHWC images, int64 labels, class names."""
    airbench = pytest.importorskip("airbench")
    data = data_tensors(tiny_folder, None)
    airbench94.write_data(data, tmp_path)
    with airbench94.working_directory(tmp_path):
        loader = airbench.CifarLoader("cifar10", train=True, gpu="cpu")
    assert loader.images.shape == (80, 3, 32, 32) and loader.labels.tolist() == data["train"][1].tolist()
    assert loader.classes == data["classes"]


def test_smoke_needs_an_out_folder(capsys):
    with pytest.raises(SystemExit) as e:
        bench.parse_args(["--smoke"])
    assert e.value.code == 2 and "never written into bench/results" in capsys.readouterr().err


@pytest.mark.parametrize("argv,text", [
    (["--rows", "bogus"], "--rows: unknown row bogus"),
    (["--seeds", "0"], "--seeds must be from 1 to 100, not 0"),
    (["--seeds", "100000000"], "--seeds must be from 1 to 100, not 100000000"),
    (["--baseline-seeds", "101"], "--baseline-seeds must be from 1 to 100, not 101"),
    (["--rows", ""], "--rows names no row"),
    (["--rows", " , "], "--rows names no row"),
    (["--bs", "0"], "--bs must be positive, not 0"),
    (["--width", "0"], "--width must be positive, not 0"),
    (["--smoke"], "--smoke needs --out DIR"),
    (["--lr-max", "inf", "--lr-min", "1e-4"], "--lr-max must be a finite number, not inf"),
    (["--lr-max", "1e-3", "--lr-min", "0"], "--lr-min must be positive, not 0.0"),
    (["--rows", "ours,seed-style,ours"], "--rows names ours twice: give each row once"),
])
def test_a_bad_flag_is_one_line(argv, text, capsys):
    assert text in one_line_error(bench.main, argv, capsys)


def test_bad_data_or_out_is_one_line_and_keeps_the_users_file(tmp_path, capsys):
    assert "does not exist" in one_line_error(bench.main, ["--smoke", "--out", str(tmp_path / "results"), "--data",
                                            str(tmp_path / "nope")], capsys)
    mine = tmp_path / "mine.txt"
    mine.write_text("precious")
    assert f"--out {mine} is not a folder" in one_line_error(bench.main, ["--smoke", "--out", str(mine), "--data",
                                                                         str(tmp_path)], capsys)
    assert mine.read_text() == "precious"


def test_the_full_bench_without_a_gpu_is_refused_as_bad_input(monkeypatch, capsys, tiny_folder):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "the bench needs a CUDA GPU" in one_line_error(bench.main, ["--data", str(tiny_folder)], capsys)


def test_the_bench_without_data_is_refused_before_it_measures_the_device(capsys):
    """Without --data or CIFAR10_DATA it measured the GPU, then failed at the download."""
    assert "the bench times a local copy of CIFAR-10: give --data or set CIFAR10_DATA" in one_line_error(
        bench.main, ["--smoke", "--out", "x"], capsys)


def test_the_bench_shows_no_library_warning():
    """fastai's import warns that torch.jit.script is deprecated: nothing a user of the bench can act on."""
    done = subprocess.run([sys.executable, "-m", "bench.bench", "--rows", "bogus"], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: --rows") and len(done.stderr.splitlines()) == 1


def test_seed_style_trains_as_the_notebooks_did():
    """torch's Adam at its defaults with L2 on every parameter (not ours' decoupled decay), and
    OneCycleLR from LRMIN up to LRMAX at 5/24 of the steps and back to LRMIN, never lower."""
    model = CustomResNet(width=4)
    opt, sched = seed_style.notebook_optimizer(model, 1e-4, 4e-3, total_steps=240)
    group, = opt.param_groups
    assert len(group["params"]) == len(list(model.parameters()))  # BatchNorm and biases decayed too
    assert group["weight_decay"] == RECIPE.wd and not group["decoupled_weight_decay"]
    assert group["eps"] == 1e-8 and group["betas"] == (0.95, 0.999)  # beta1 at OneCycleLR's start
    lrs = []
    for _ in range(240):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(4e-3)
    assert lrs.index(max(lrs)) == 49 and lrs[-1] == pytest.approx(1e-4, rel=1e-3) and min(lrs) >= 1e-4 * 0.999
