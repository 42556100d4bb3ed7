import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from safetensors.torch import save_file

import predict
from cifar10_fast.data.images import read_rgb32
from customresnet import CustomResNet
from tests.conftest import REPO


def run_predict(capsys, *args):
    predict.main([str(a) for a in args])
    return capsys.readouterr().out


def test_predicts_class_and_probability_for_every_image_of_any_size_or_mode(run_dir, images, capsys):
    out = run_predict(capsys, "--run", run_dir, images)
    lines = out.strip().splitlines()
    assert len(lines) == 1 + 3
    assert all(" cat " in line and "0.2" in line for line in lines[1:])  # softmax of a one-hot bias: e/(e+9)


def test_topk_and_csv(run_dir, images, tmp_path, capsys):
    csv = tmp_path / "out.csv"
    run_predict(capsys, "--run", run_dir, images / "a.png", "--topk", 3, "--csv", csv)
    table = pd.read_csv(csv)
    assert list(table.columns) == ["image", "class", "probability", "class_2", "probability_2", "class_3",
                                   "probability_3"]
    assert table["class"][0] == "cat" and table.probability[0] > table.probability_2[0] >= table.probability_3[0]


def test_topk_above_the_classes_shows_them_all_and_says_so(run_dir, images, capsys):
    predict.main(["--run", str(run_dir), str(images / "a.png"), "--topk", "11"])
    out, err = capsys.readouterr()
    assert "probability_10" in out and "probability_11" not in out
    assert err == "warning: --topk 11 is more than the 10 classes of the model: showing all of them\n"


def test_csv_never_overwrites(run_dir, images, tmp_path, capsys):
    csv = tmp_path / "mine.csv"
    csv.write_text("precious")
    with pytest.raises(SystemExit):
        run_predict(capsys, "--run", run_dir, images, "--csv", csv)
    assert csv.read_text() == "precious"


def test_pickle_is_only_loaded_when_asked(run_dir, images, capsys):
    class Payload:
        def __reduce__(self):
            return (open, (str(run_dir / "pwned"), "w"))

    (run_dir / "export.pkl").write_bytes(pickle.dumps(Payload()))
    run_predict(capsys, "--run", run_dir, images / "a.png")
    assert not (run_dir / "pwned").exists()


def test_image_names_that_are_not_utf8_are_printed_and_written_with_their_bytes_escaped(run_dir, images, tmp_path,
                                                                                        capsys):
    Image.open(images / "a.png").save(os.fsencode(images / "caf") + b"\xe9.png")  # Latin-1 é: not UTF-8
    csv = tmp_path / "out.csv"
    out = run_predict(capsys, "--run", run_dir, images, "--csv", csv)
    assert "caf\\xe9.png" in out
    assert any(name.endswith("caf\\xe9.png") for name in pd.read_csv(csv).image)


@pytest.fixture
def exported_run(tmp_path, tiny_folder):
    """A run folder with the same untrained thin model as export.pkl and as model.safetensors with
    classes.json, the way train_fastai.py writes them."""
    from fastai.vision.all import CrossEntropyLossFlat, Learner

    from cifar10_fast.data.loaders import cifar10_dataloaders
    dls, (mean, std) = cifar10_dataloaders(tiny_folder, bs=8, device="cpu")
    learn = Learner(dls, CustomResNet(width=8), loss_func=CrossEntropyLossFlat())
    run = tmp_path / "exported"
    run.mkdir()
    learn.export(run / "export.pkl")
    save_file(learn.model.state_dict(), run / "model.safetensors")
    (run / "classes.json").write_text(json.dumps({"classes": list(dls.vocab), "mean": mean, "std": std}))
    return run


def test_pickle_and_safetensors_squash_a_non_square_image_alike(exported_run, tmp_path, capsys):
    image = tmp_path / "wide.png"  # noise: cropping it and squashing it give different pixels
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(image)
    safetensors_out = run_predict(capsys, "--run", exported_run, image, "--topk", 10)
    assert run_predict(capsys, "--run", exported_run, image, "--topk", 10, "--pickle") == safetensors_out


@pytest.mark.parametrize("mode,values", [("I", 200), ("I;16", 200 * 257)])
def test_pickle_and_safetensors_read_an_integer_image_alike_and_not_black(exported_run, tmp_path, capsys, mode, values):
    """A 32-bit integer image of 8-bit values read as black (shifted as if 16-bit), and fastai's
    reading of it (predict.py --pickle, the exported learner) clipped it to white."""
    image = tmp_path / f"{mode.replace(';', '')}.tiff"
    pixels = np.full((32, 32), values, dtype=np.int32 if mode == "I" else np.uint16)
    Image.fromarray(pixels).save(image)  # int32: mode I; uint16: I;16
    assert Image.open(image).mode == mode
    assert (read_rgb32(image)[0] == 200).all()
    safetensors_out = run_predict(capsys, "--run", exported_run, image, "--topk", 10)
    assert run_predict(capsys, "--run", exported_run, image, "--topk", 10, "--pickle") == safetensors_out


def test_pickle_shows_our_note_and_no_library_warnings(exported_run, images, capsys):
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        predict.main(["--run", str(exported_run), str(images / "a.png"), "--pickle"])
    assert [str(warning.message) for warning in shown] == []
    assert capsys.readouterr().err.startswith("note: unpickling")


def test_predict_starts_without_importing_fastai():
    script = "import sys, predict; print('fastai' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_files_a_folder_holds_besides_images_are_counted_in_one_warning(run_dir, images, capsys):
    """Issue 17: they were skipped without a word. An image without an extension (a camera's
    file, say) is read when given by its own path."""
    (images / "sub").mkdir()
    for name in ("README", "labels.json"):
        (images / "sub" / name).write_text("not an image")
    (images / "sub" / "photo").write_bytes((images / "a.png").read_bytes())
    predict.main(["--run", str(run_dir), str(images)])
    captured = capsys.readouterr()
    assert captured.err == ("warning: skipped 4 files without an image extension in the folders given (notes.txt, "
                            "README, labels.json, ...): give such a file by its own path to classify it\n")
    assert len(captured.out.strip().splitlines()) == 1 + 3
    out = run_predict(capsys, "--run", run_dir, images / "sub" / "photo")
    assert len(out.strip().splitlines()) == 1 + 1 and " cat " in out


# Issue 24, class 3: names from someone else ---------------------------------------------------

def test_names_from_someone_else_reach_the_terminal_escaped(run_dir, images, capsys):
    """An escape sequence in a file or class name went to the terminal raw: it can clear the screen,
    recolour it, or write a line that is not there."""
    Image.open(images / "a.png").save(images / "\x1b[2Jcleared.png")
    classes = json.loads((run_dir / "classes.json").read_text())
    classes["classes"][3] = "cat\x1b[31m"  # what the run_dir's model always says
    (run_dir / "classes.json").write_text(json.dumps(classes))
    out = run_predict(capsys, "--run", run_dir, images)
    assert "\x1b" not in out and "\\x1b[2Jcleared.png" in out and "cat\\x1b[31m" in out


def test_a_name_that_a_spreadsheet_takes_for_a_formula_is_written_as_text(run_dir, images, tmp_path, capsys,
                                                                           monkeypatch):
    Image.open(images / "a.png").save(images / "=1+1.png")
    monkeypatch.chdir(images)
    csv = tmp_path / "out.csv"
    run_predict(capsys, "--run", run_dir, "=1+1.png", "--csv", csv)
    assert pd.read_csv(csv).image.tolist() == ["'=1+1.png"]


def test_the_copies_in_a_folders_hidden_folders_are_not_predicted(run_dir, images, capsys):
    """Jupyter keeps a copy of every file in .ipynb_checkpoints/: they were predicted too."""
    (images / ".ipynb_checkpoints").mkdir()
    Image.open(images / "a.png").save(images / ".ipynb_checkpoints" / "a-checkpoint.png")
    (images / ".hidden.png").write_bytes((images / "a.png").read_bytes())
    out = run_predict(capsys, "--run", run_dir, images)
    assert "checkpoint" not in out and ".hidden" not in out and len(out.strip().splitlines()) == 1 + 3
