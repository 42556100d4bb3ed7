"""The reference checkpoint: written from a finished recipe run, read by predict.py without --run."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import predict
from bench import reference
from customresnet import CustomResNet
from tests.conftest import one_line_error, real_subset

RECIPE_CONFIG = {"epochs": 24, "peak_epoch": 5.0, "bs": 512, "lr_min": 1e-4, "lr_max": 1e-3,
                 "lr_source": "lr_find.json", "wd": 0.01, "aug": "gpu", "precision": "bf16", "width": 64,
                 "subset": None, "seed": 0,
                 "label_smoothing": 0.0, "tta": False, "target_acc": None, "preset": "seed",
                 "data": "/data/cifar10", "test_images": 10000}
SUMMARY = {"final_accuracy": 0.93, "fit_seconds": 9.5, "device": "gpu", "versions": {"torch": "x"}, "epochs": 24,
           "stopped_early": False}


@pytest.fixture
def recipe_run(run_dir):
    """test_predict's run folder, its model widened to the recipe's 64 (its head still always says
    "cat"), with the config and summary a 24-epoch recipe run leaves."""
    model = CustomResNet(width=64)
    with torch.no_grad():
        model.head[2].weight.zero_()
        model.head[2].bias.copy_(load_file(run_dir / "model.safetensors")["head.2.bias"])
    save_file(model.state_dict(), run_dir / "model.safetensors")
    (run_dir / "config.json").write_text(json.dumps(RECIPE_CONFIG))
    (run_dir / "summary.json").write_text(json.dumps(SUMMARY))
    return run_dir


def test_writes_fp16_weights_and_their_json_and_predict_uses_them(recipe_run, images, tmp_path, monkeypatch,
                                                                  capsys):
    models = tmp_path / "models"
    reference.main([str(recipe_run), "--models", str(models)])
    weights = load_file(models / "customresnet-cifar10.safetensors")
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float16}
    meta = json.loads((models / "customresnet-cifar10.json").read_text())
    assert meta["final_accuracy"] == 0.93 and meta["recipe"]["epochs"] == 24 and meta["data"] == "/data/cifar10"
    assert meta["classes"][3] == "cat" and "--epochs 24" in meta["command"]

    monkeypatch.setattr(predict, "REFERENCE", models / "customresnet-cifar10")
    capsys.readouterr()
    predict.main([str(images / "a.png")])  # no --run: the reference checkpoint
    assert " cat " in capsys.readouterr().out


@pytest.mark.parametrize("change,message", [({"epochs": 2}, "is not the recipe (epochs=2"),
                                            ({"width": 8}, "is not the recipe (width=8"),
                                            ({"subset": 5000}, "is not the recipe (subset=5000"),
                                            ({"target_acc": 0.94}, "is not the recipe (target_acc=0.94"),
                                            ({"label_smoothing": 0.5}, "is not the recipe (label_smoothing=0.5"),
                                            ({"bs": 256, "wd": 0.1}, "is not the recipe (bs=256, wd=0.1"),
                                            ({"preset": "fast"}, "is not the recipe (preset=fast")])
def test_refuses_a_run_that_is_not_the_recipe(recipe_run, tmp_path, capsys, change, message):
    (recipe_run / "config.json").write_text(json.dumps({**RECIPE_CONFIG, **change}))
    assert message in one_line_error(reference.main, [str(recipe_run), "--models", str(tmp_path / "models")], capsys)
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("change", [{"stopped_early": True, "epochs": 9}, {"epochs": 23}])
def test_refuses_a_run_that_stopped_early(recipe_run, tmp_path, capsys, change):
    (recipe_run / "summary.json").write_text(json.dumps({**SUMMARY, **change}))
    line = one_line_error(reference.main, [str(recipe_run), "--models", str(tmp_path / "models")], capsys)
    assert f"stopped after {change['epochs']} of its 24 epochs" in line
    assert not (tmp_path / "models").exists()


def test_refuses_weights_of_another_width_than_the_config_says(recipe_run, run_dir, tmp_path, capsys):
    save_file(CustomResNet(width=4).state_dict(), recipe_run / "model.safetensors")
    line = one_line_error(reference.main, [str(recipe_run), "--models", str(tmp_path / "models")], capsys)
    assert "holds weights of width 4, but its config.json says 64" in line
    assert not (tmp_path / "models").exists()


def test_bad_arguments_are_one_line(recipe_run, tmp_path, capsys):
    assert "run_dir" in one_line_error(reference.main, [], capsys)
    mine = tmp_path / "mine.txt"
    mine.write_text("precious")
    line = one_line_error(reference.main, [str(recipe_run), "--models", str(mine)], capsys)
    assert f"--models {mine} is not a folder" in line
    assert mine.read_text() == "precious"
    assert "is not a finished training run" in one_line_error(reference.main, [str(tmp_path / "nope")], capsys)


def test_never_overwrites_a_reference(recipe_run, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    (models / "customresnet-cifar10.safetensors").write_bytes(b"precious")
    with pytest.raises(SystemExit):
        reference.main([str(recipe_run), "--models", str(models)])
    assert "never overwritten" in capsys.readouterr().err
    assert (models / "customresnet-cifar10.safetensors").read_bytes() == b"precious"


def test_predict_without_run_or_reference_says_how_to_get_one(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(predict, "REFERENCE", tmp_path / "models" / "customresnet-cifar10")
    with pytest.raises(SystemExit) as e:
        predict.main([str(images)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert "reference checkpoint" in err[0] and "--run RUN_DIR" in err[0] and "-m", "bench.reference" in err[0]


@pytest.mark.skipif(not predict.REFERENCE.with_suffix(".safetensors").is_file(),
                    reason="models/customresnet-cifar10.safetensors is not committed yet: it comes from the GPU "
                           "bench session (BENCHMARKS.md)")
def test_committed_reference_classifies_90_percent_of_1000_test_images(tmp_path, capsys):
    folder = real_subset(tmp_path, n_train_per_class=0, n_test_per_class=100) / "test"
    predict.main([str(folder), "--csv", str(tmp_path / "predictions.csv")])
    import pandas as pd
    table = pd.read_csv(tmp_path / "predictions.csv")
    assert len(table) == 1000
    correct = (table["class"] == table.image.map(lambda p: p.split("/")[-2])).mean()
    assert correct >= 0.90, correct


@pytest.mark.parametrize("name,text,line", [
    ("config.json", '{"epochs": 24, "bs', "config.json is damaged (JSONDecodeError)"),
    ("summary.json", "[0.93]", "summary.json is damaged (no final_accuracy)"),
    ("config.json", json.dumps({key: value for key, value in RECIPE_CONFIG.items() if key != "data"}),
     "config.json is damaged (no data)"),
    ("classes.json", json.dumps({"classes": ["cat"] * 10, "mean": [0.5] * 3, "std": [0.25] * 3}),
     '"classes" names cat more than once'),
])
def test_a_damaged_run_file_is_one_line_naming_it(recipe_run, tmp_path, capsys, name, text, line):
    """Issue 17: a config.json cut short was a JSONDecodeError traceback."""
    (recipe_run / name).write_text(text)
    assert line in one_line_error(reference.main, [str(recipe_run), "--models", str(tmp_path / "models")], capsys)
    assert not (tmp_path / "models").exists()
