"""The reference checkpoint: written from a finished recipe run, read by predict.py without --run."""
import json
import sys

import pytest
import torch
from safetensors.torch import load_file

import predict
from conftest import REPO, real_subset

sys.path.insert(0, str(REPO / "bench"))
import reference  # noqa: E402

RECIPE_CONFIG = {"epochs": 24, "peak_epoch": 5.0, "bs": 512, "lr_min": 1e-4, "lr_max": 1e-3, "lr_source": "lr_find.json",
                 "wd": 0.01, "aug": "gpu", "precision": "bf16", "width": 64, "subset": None, "seed": 0,
                 "data": "/data/cifar10", "test_images": 10000}


@pytest.fixture
def recipe_run(run_dir):
    """test_predict's thin run folder, with the config and summary a 24-epoch recipe run leaves."""
    (run_dir / "config.json").write_text(json.dumps(RECIPE_CONFIG))
    (run_dir / "summary.json").write_text(json.dumps({"final_accuracy": 0.93, "fit_seconds": 9.5, "device": "gpu",
                                                      "versions": {"torch": "x"}}))
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
                                            ({"subset": 5000}, "is not the recipe (subset=5000")])
def test_refuses_a_run_that_is_not_the_recipe(recipe_run, tmp_path, capsys, change, message):
    (recipe_run / "config.json").write_text(json.dumps({**RECIPE_CONFIG, **change}))
    with pytest.raises(SystemExit) as e:
        reference.main([str(recipe_run), "--models", str(tmp_path / "models")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "models").exists()


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
    assert "reference checkpoint" in err[0] and "--run RUN_DIR" in err[0] and "bench/reference.py" in err[0]


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
