import json
import re
import subprocess
import sys

import pandas as pd
import pytest
import torch
from PIL import Image

from cifar10_fast.core.config import FINDER_ITERS_MIN, UsageError
from cifar10_fast.training import lr_schedule
from customresnet import CustomResNet
from tests.conftest import (
    CLASSES,
    GIVEN_LRS,
    REPO,
    RUN_FILES,
    TINY,
    TRAINING_FILES,
    ctrl_c_while_torch_loads,
    real_subset,
    write_folder,
)
from train_fastai import main


def run_dirs(out):
    return sorted(p for p in out.iterdir() if p.is_dir())


def cli(*args):
    return main([*map(str, args)])


def test_cli_find_lr_then_train_writes_every_output(tmp_path, tiny_folder, capsys, monkeypatch):
    out = tmp_path / "runs"
    common = ["--data", tiny_folder, "--out", out, "--bs", 16, "--width", 8]
    cli("--find-lr", *common, "--name", "finder")
    finder_dir, = run_dirs(out)
    assert finder_dir.name.endswith("-finder")
    found = json.loads((finder_dir / "lr_find.json").read_text())
    assert 0 < found["lr_min"] < found["lr_max"] and "LRMAX" in found["rule"]
    assert list(pd.read_csv(finder_dir / "lr_find.csv").columns) == ["lr", "loss", "batch_loss"]
    printed = capsys.readouterr().out
    assert "LRMIN" in printed
    # The finder's 100 batches of 16, and no test pass: it never evaluates. Timed on the finder's first batches.
    assert "CPU only: this run will take about" in printed and "(1600 training images at" in printed
    assert "test images" not in printed.split("CPU only")[1].splitlines()[0]
    assert printed.index("LR range test: 100 iterations") < printed.index("CPU only") < printed.index("LRMIN")

    cli(*common, "--epochs", 2, "--name", "train")
    # 100 finder iterations and 2 epochs of 5 batches of 16; 2 epochs' passes over 20 test images (the
    # interpretation's predictions are the last one's).
    printed = capsys.readouterr().out
    assert "(1760 training images at" in printed and "and 40 test images at" in printed
    train_dir = next(p for p in run_dirs(out) if p.name.endswith("-train"))
    assert finder_dir.exists()  # the earlier run is untouched
    for name in RUN_FILES:
        assert (train_dir / name).stat().st_size > 0, name
    history = pd.read_csv(train_dir / "history.csv")
    assert list(history.columns) == ["epoch", "train_loss", "valid_loss", "accuracy", "time"]
    assert len(history) == 2
    summary = json.loads((train_dir / "summary.json").read_text())
    assert summary["final_accuracy"] == pytest.approx(history.accuracy.iloc[-1])
    assert summary["best_accuracy"] == pytest.approx(history.accuracy.max())
    for key in ("parameters", "first_epoch_90", "fit_seconds", "fit_images_per_s", "device", "versions", "seed"):
        assert key in summary
    phases = summary["phases"]  # called from Python, not as a script: no start-up of its own
    assert list(phases) == ["data", "learner", "range_test", "fit", "outputs"] and min(phases.values()) >= 0
    assert phases["fit"] >= summary["fit_seconds"] and summary["compile_seconds"] == 0
    assert re.search(rf"fit {summary['fit_seconds']:.1f} s of {sum(phases.values()):.1f} s in all; outputs in ",
                     printed)
    config = json.loads((train_dir / "config.json").read_text())
    assert config["lr_source"] == "lr_find.json" and config["epochs"] == 2 and config["width"] == 8
    # The finder runs its 100 iterations, however short the run (2 epochs of 80 images in batches of 16).
    assert config["finder_iters"] == json.loads((train_dir / "lr_find.json").read_text())["iterations"] == 100
    assert len(pd.read_csv(train_dir / "lr_find.csv")) > 2 * 5
    schedule = pd.read_csv(train_dir / "lr_schedule.csv")
    assert list(schedule.columns) == ["iteration", "epoch", "lr", "mom"] and len(schedule) == 2 * 5
    assert schedule.lr.iloc[0] == pytest.approx(config["lr_min"])
    assert schedule.lr.max() == pytest.approx(config["lr_max"], rel=0.05)
    assert not (train_dir / "models").exists()
    assert (train_dir / "report.html").read_text().count("src='data:image/png;base64,") == 5  # lr_find.png too
    for png in train_dir.glob("*.png"):
        assert Image.open(png).size[0] > 200

    # The exported learner loads and predicts in a Python that never imported the project, started
    # in another folder, with nothing on its path but what is installed.
    image = tiny_folder / "test" / "cat" / "0000.png"
    script = (f"from fastai.learner import load_learner; learn = load_learner({str(train_dir / 'export.pkl')!r}); "
              f"print(learn.predict({str(image)!r})[0])")
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] in json.loads((train_dir / "classes.json").read_text())["classes"]

    import predict
    predict.main(["--run", str(train_dir), str(image)])
    assert "cat/0000.png" in capsys.readouterr().out


def test_default_relative_out_from_a_fresh_folder_leaves_every_output(tmp_path, tiny_folder, monkeypatch):
    """As a user types it: relative --data, the default --out runs, in the current folder."""
    monkeypatch.chdir(tmp_path)
    cli("--data", tiny_folder.relative_to(tmp_path), "--bs", 16, "--width", 8, "--epochs", 1)
    run_dir, = run_dirs(tmp_path / "runs")
    for name in RUN_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    assert pd.read_csv(tmp_path / "runs" / "index.csv").run.tolist() == [run_dir.name]


def test_a_test_set_of_fewer_than_10_images_shows_them_all_as_misclassified(tmp_path):
    """misclassified.png shows the 10 test images with the highest loss, or all of a smaller test set.
    The interpretation and flip TTA start from the predictions of the fit's last test pass: after the
    fit the model sees only the mirrored test images."""
    folder = write_folder(tmp_path / "small", n_train=8, n_test=2, classes=["cat", "dog"])  # 4 test images
    out = tmp_path / "runs"
    tested = []

    def count_test_images(model, inputs):
        if isinstance(model, CustomResNet) and not model.training:
            tested.append(len(inputs[0]))

    hook = torch.nn.modules.module.register_module_forward_pre_hook(count_test_images)
    try:
        cli("--data", folder, "--out", out, "--bs", 16, "--width", 8, "--epochs", 1, *GIVEN_LRS, "--tta")
    finally:
        hook.remove()
    run_dir, = run_dirs(out)
    for name in TRAINING_FILES:  # the LRs are given: no range test
        assert (run_dir / name).stat().st_size > 0, name
    assert sum(tested) == 4 + 4  # the epoch's test pass, flip TTA's mirrored pass


def test_cli_albumentations_backend_with_given_lrs(tmp_path, tiny_folder):
    out = tmp_path / "runs"
    cli("--data", tiny_folder, "--out", out, "--bs", 16, "--width", 8, "--epochs", 1, "--aug", "albumentations",
        "--workers", 0, "--lr-min", 1e-4, "--lr-max", 1e-3)
    run_dir, = run_dirs(out)
    config = json.loads((run_dir / "config.json").read_text())
    assert config["lr_source"] == "flags" and config["aug"] == "albumentations"
    assert "finder_iters" not in config  # recorded only when the finder runs
    assert not (run_dir / "lr_find.json").exists()
    assert len(pd.read_csv(run_dir / "history.csv")) == 1


def test_bad_input_from_the_shell_prints_no_traceback(tmp_path):
    done = subprocess.run([sys.executable, str(REPO / "train_fastai.py"), "--data", str(tmp_path / "missing")],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: --data {tmp_path / 'missing'}: {tmp_path / 'missing'} does "
                                                "not exist: give a CIFAR-10 folder or .tgz (fastai's layout or the "
                                                "python version) (see --help)"]


def test_it_learns_real_cifar10(tmp_path):
    """A thin model on 3,000 real training images for 5 epochs is far above chance (10%)."""
    folder = real_subset(tmp_path, n_train_per_class=300, n_test_per_class=50)
    out = tmp_path / "runs"
    cli("--data", folder, "--out", out, "--width", 16, "--bs", 128, "--epochs", 5,
        "--lr-min", 2e-4, "--lr-max", 4e-3)
    run_dir, = run_dirs(out)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_accuracy"] > 0.35, summary


def test_a_run_reports_flip_tta_time_to_accuracy_and_an_early_stop(finished_sweep):
    _, group, printed = finished_sweep
    run_dir = group.parent / json.loads((group / "summary.json").read_text())["members"][0]
    summary = json.loads((run_dir / "summary.json").read_text())
    history = pd.read_csv(run_dir / "history.csv")
    config = json.loads((run_dir / "config.json").read_text())
    assert config["target_acc"] == 0.01 and config["epochs"] == 2 and config["preset"] == "seed" and config["tta"]
    # Any accuracy above zero reaches 1%: the run stops after its first of two epochs.
    assert len(history) == summary["epochs"] == 1 and summary["stopped_early"]
    assert summary["first_epoch_1"] == 1 and 0 < summary["seconds_to_1"] <= summary["fit_seconds"]
    for milestone in (90, 93, 94):
        reached = history.index[history.accuracy >= milestone / 100]
        assert summary[f"first_epoch_{milestone}"] == (reached[0] + 1 if len(reached) else None)
    assert 0 <= summary["tta_accuracy"] <= 1
    assert (f"final test accuracy {100 * summary['final_accuracy']:.2f}% ({100 * summary['tta_accuracy']:.2f}% "
            "with flip TTA) after 1 epoch, stopped at --target-acc 0.01") in printed


def test_compile_trains_through_fastai_and_saves_plain_weights(tmp_path, tiny_folder, monkeypatch, capsys):
    """--compile hands fastai's Learner torch.compile's module; the weights and the exported learner
    come from the plain module. aot_eager traces forward and backward through AOT autograd as the
    GPU's inductor does, without minutes of code generation on a CPU."""
    import torch
    from safetensors.torch import load_file
    real_compile, compiled = torch.compile, []

    def compile_for_test(model):
        compiled.append(model)
        return real_compile(model, backend="aot_eager")

    monkeypatch.setattr(torch, "compile", compile_for_test)
    out = tmp_path / "runs"
    cli("--data", tiny_folder, "--out", out, "--bs", 16, "--width", 8, "--epochs", 1, "--compile")
    run_dir, = run_dirs(out)
    assert len(compiled) == 1
    assert all(not name.startswith("_orig_mod") for name in load_file(run_dir / "model.safetensors"))
    assert json.loads((run_dir / "config.json").read_text())["compile"] is True
    assert len(pd.read_csv(run_dir / "history.csv")) == 1
    # Compiling is timed apart from the fit, by torch's own account, and said.
    summary = json.loads((run_dir / "summary.json").read_text())
    assert 0 < summary["compile_seconds"] and summary["fit_seconds"] < summary["phases"]["fit"]
    printed = capsys.readouterr().out
    assert f"fit {summary['fit_seconds']:.1f} s and {summary['compile_seconds']:.1f} s compiling of " in printed
    assert "s compiling the model, more for its first test pass)" in printed


def test_config_is_written_before_the_finder_can_stop_the_run(tmp_path, tiny_folder, monkeypatch, capsys):
    def no_fall(*_):
        raise UsageError("the LR range test found no fall in the loss")

    monkeypatch.setattr(lr_schedule, "lr_bounds", no_fall)
    with pytest.raises(SystemExit):
        main([*TINY, "--data", str(tiny_folder), "--out", str(tmp_path / "runs"), "--epochs", "1",
              "--finder-iters", str(FINDER_ITERS_MIN)])
    assert "no fall in the loss" in capsys.readouterr().err
    run_dir, = (tmp_path / "runs").iterdir()
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1


def test_a_member_that_fails_on_its_own_leaves_the_others_trained_and_the_group_says_so(tmp_path, tiny_folder, capsys):
    """A point of bad input (80 training images make no batch of 200) fails its run alone: the
    others are trained and summarised, and the group ends with one line naming it, exit status 2."""
    out = tmp_path / "runs"
    with pytest.raises(SystemExit) as e:
        cli("--data", tiny_folder, "--out", out, "--width", 8, *GIVEN_LRS, "--epochs", 1, "--sweep", "bs=200,16")
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err[-1].startswith("error: 1 run of 2 of ") and "no full batch of --bs 200" in err[-1]
    group, = out.glob("*-group")
    summary = json.loads((group / "summary.json").read_text())
    assert len(summary["members"]) == 1 and (out / summary["members"][0] / "report.html").is_file()
    assert summary["trials"]["fail"] == 1 and summary["trials"]["complete"] == 1


def test_a_group_sets_its_data_up_once_and_each_run_takes_its_subset(tmp_path, tiny_folder, monkeypatch):
    from cifar10_fast.data import decoded_folder
    listings, real_list = [], decoded_folder.list_folder
    monkeypatch.setattr(decoded_folder, "list_folder", lambda folder: listings.append(folder) or real_list(folder))
    cli("--data", tiny_folder, "--out", tmp_path / "runs", *TINY, *GIVEN_LRS, "--epochs", 1, "--sweep", "subset=32,80")
    assert listings == [tiny_folder]
    first, second = (json.loads((run / "config.json").read_text()) for run in run_dirs(tmp_path / "runs")
                     if not run.name.endswith("-group"))
    assert (first["train_images"], second["train_images"]) == (32, 80)
    assert first["data_sha256"] == second["data_sha256"] and first["normalize_mean"] != second["normalize_mean"]


def test_ctrl_c_while_torch_loads_is_one_line(tmp_path, tiny_folder):
    status, err = ctrl_c_while_torch_loads(["--data", str(tiny_folder), *TINY], tmp_path)
    assert status == 130 and err == "interrupted before training: nothing to resume\n"


def test_names_with_dollars_are_text_in_every_figure(tmp_path, capsys):
    """matplotlib reads $...$ as TeX: an unknown command in a class or run name failed the figures
    after training and lost the run's outputs."""
    import compare
    classes = ["$\\nosuchcmd$", *CLASSES[1:]]
    data = write_folder(tmp_path / "data", classes=classes)
    out = tmp_path / "runs"
    cli("--data", data, "--out", out, *TINY, *GIVEN_LRS, "--epochs", 1, "--name", "$\\bad$")
    run_dir, = (path for path in out.iterdir() if path.is_dir())
    assert (run_dir / "report.html").is_file() and (run_dir / "confusion_matrix.png").is_file()
    compare.main(["--out", str(out), "--png", str(tmp_path / "compare.png")])
    assert (tmp_path / "compare.png").is_file()


def test_a_given_lr_max_is_recorded_as_given_beside_the_lr_min_the_finder_found(tmp_path, tiny_folder):
    """Issue 17: with only --lr-max given, config.json said both LRs came from the range test."""
    cli("--find-lr", "--data", tiny_folder, "--out", tmp_path / "runs", *TINY, "--lr-max", "2e-3")
    run_dir, = run_dirs(tmp_path / "runs")
    config, found = (json.loads((run_dir / name).read_text()) for name in ("config.json", "lr_find.json"))
    assert config["lr_source"] == "lr_min: lr_find.json, lr_max: flags"
    assert config["lr_max"] == 2e-3 and config["lr_min"] == found["lr_min"]


def test_a_run_imports_only_what_it_uses(tiny_folder, tmp_path):
    """fastai.vision.all loads every application and model of fastai; albumentations takes a second and
    serves --aug albumentations alone; torchvision (for fastai's Resize and image plot_top_losses),
    scikit-learn and SciPy's stats (for fastai's splitter and metrics) took 4 s of every run."""
    unused = ("fastai.vision.all", "fastai.vision.learner", "fastai.vision.models", "albumentations", "cv2",
              "torchvision", "sklearn", "scipy.stats")
    argv = ["--data", str(tiny_folder), "--out", str(tmp_path / "runs"), *TINY, "--epochs", "1", *GIVEN_LRS]
    script = (f"import sys, train_fastai; train_fastai.main({argv!r}); "
              f"print(sorted(name for name in {unused!r} if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", done.stderr
