"""The bad inputs of flags, run folders, and what predict and compare are given."""
import json
import os
import pickle

import torch

from tests.bad_input.makers_data import Payload, data
from tests.conftest import GIVEN_LRS

# CLI values --------------------------------------------------------------------------------

def flags(*given):
    return lambda tmp, folder, run: [*data(folder), *given]


def unwritable_out(tmp, folder, run):
    (tmp / "file").write_text("not a folder")
    return [*data(folder), "--out", str(tmp / "file" / "runs")]


CHECKPOINT = {"epochs_done": 1, "history": [["0", "2.3", "2.2", "0.1", "00:01"]], "lrs": [1e-4, 2e-4],
              "moms": [0.95, 0.94], "fit_seconds": 1.5}  # what an interruption after epoch 1 writes


def interrupted_run(tmp, epochs):
    run = tmp / "interrupted"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"epochs": epochs, "bs": 16, "width": 8, "data": str(tmp)}))
    (run / "checkpoint.json").write_text(json.dumps(CHECKPOINT))
    return run


def resume_other_config(tmp, folder, run):
    return ["--resume", str(interrupted_run(tmp, epochs=2)), "--epochs", "5"]


def resume_with_runs(tmp, folder, run):
    return ["--resume", str(interrupted_run(tmp, epochs=2)), "--runs", "2"]


def resume_without_checkpoint(files=None):
    """--resume of a run folder with no checkpoint.json, and `files` ({name: text}) beside its config.json."""
    def make(tmp, folder, run):
        run_dir = interrupted_run(tmp, epochs=2)
        (run_dir / "checkpoint.json").unlink()
        for name, text in (files or {}).items():
            (run_dir / name).write_text(text)
        return ["--resume", str(run_dir)]
    return make


# Issue 9, train side: resume, memory, values that are not numbers, names, files midway -------

def resume_with_sweep(tmp, folder, run):
    return ["--resume", str(interrupted_run(tmp, epochs=2)), "--sweep", "lr_max=1e-3,2e-3"]


def config_saying(checkpoint=True, **values):
    """--resume of an interrupted run whose config.json says `values`; without its checkpoint.json
    unless `checkpoint`."""
    def make(tmp, folder, run):
        run_dir = interrupted_run(tmp, epochs=2)
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(json.dumps({**config, **values}))
        if not checkpoint:
            (run_dir / "checkpoint.json").unlink()
        return ["--resume", str(run_dir)]
    return make


def checkpoint_saying(**values):
    def make(tmp, folder, run):
        run_dir = interrupted_run(tmp, epochs=2)
        (run_dir / "checkpoint.json").write_text(json.dumps({**CHECKPOINT, **values}))
        return ["--resume", str(run_dir)]
    return make


def unreadable_checkpoint(tmp, folder, run):
    run_dir = interrupted_run(tmp, epochs=2)
    (run_dir / "checkpoint.json").write_bytes(b"\xff\xfe not JSON")
    return ["--resume", str(run_dir)]


def resume_into_another_out(tmp, folder, run):
    return ["--resume", str(interrupted_run(tmp, epochs=2)), "--out", str(tmp / "elsewhere")]


def index_saying(text):
    def make(tmp, folder, run):
        (tmp / "runs").mkdir()
        (tmp / "runs" / "index.csv").write_text(text)
        return [*data(folder), *GIVEN_LRS, "--epochs", "1"]
    return make


def index_that_is_a_folder(tmp, folder, run):
    (tmp / "runs" / "index.csv").mkdir(parents=True)
    return [*data(folder), *GIVEN_LRS, "--epochs", "1"]


# predict inputs ----------------------------------------------------------------------------

def predict_args(*given):
    return lambda tmp, folder, run: ["--run", str(run), *given]


def no_run_folder(tmp, folder, run):
    return ["--run", str(run / "nope"), str(tmp / "images")]


def not_safetensors(tmp, folder, run):
    (run / "model.safetensors").write_bytes(b"this is not safetensors")
    return ["--run", str(run), str(tmp / "images")]


def pickle_as_model(tmp, folder, run):
    (run / "model.safetensors").write_bytes(pickle.dumps(Payload(tmp)))
    return ["--run", str(run), str(tmp / "images")]


def foreign_weights(tmp, folder, run):
    from safetensors.torch import save_file
    save_file({"fc.weight": torch.zeros(2, 2)}, run / "model.safetensors")
    return ["--run", str(run), str(tmp / "images")]


def only_a_malicious_export(tmp, folder, run):
    (run / "model.safetensors").unlink()
    (run / "export.pkl").write_bytes(pickle.dumps(Payload(tmp)))
    return ["--run", str(run), str(tmp / "images")]


def missing_classes(tmp, folder, run):
    (run / "classes.json").unlink()
    return ["--run", str(run), str(tmp / "images")]


def unreadable_image(tmp, folder, run):
    (tmp / "images" / "broken.png").write_bytes(b"\x89PNG broken")
    return ["--run", str(run), str(tmp / "images")]



# Odd files (2): predict's outputs and files ------------------------------------------------

def predict_csv(csv):
    """predict on the images, with --csv tmp/`csv`."""
    return lambda tmp, folder, run: ["--run", str(run), str(tmp / "images"), "--csv", str(tmp / csv)]


def malicious_export(tmp, folder, run):
    (run / "export.pkl").write_bytes(pickle.dumps(Payload(tmp, "export-code-ran")))
    return ["--run", str(run), str(tmp / "images"), "--pickle"]


def classes_json(**values):
    """predict on the run, its classes.json with `values` in place of its own."""
    def make(tmp, folder, run):
        info = json.loads((run / "classes.json").read_text())
        (run / "classes.json").write_text(json.dumps({**info, **values}))
        return ["--run", str(run), str(tmp / "images")]
    return make


def csv_link_to_nowhere(tmp, folder, run):
    os.symlink("nowhere.csv", tmp / "link.csv")
    return ["--run", str(run), str(tmp / "images"), "--csv", str(tmp / "link.csv")]


def classes_json_not_json(tmp, folder, run):
    (run / "classes.json").write_text('{"classes": [')
    return ["--run", str(run), str(tmp / "images")]


# Odd files (3): compare's files and outputs ------------------------------------------------

def finished_run(run_dir):
    """The files compare.py reads of a finished run, for one epoch."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps({"lr_max": 0.01, "seed": 0}))
    (run_dir / "summary.json").write_text(json.dumps({"final_accuracy": 0.5, "fit_seconds": 1.0, "epochs": 1}))
    (run_dir / "history.csv").write_text("epoch,accuracy\n0,0.5\n")
    (run_dir / "lr_schedule.csv").write_text("epoch,lr\n0,0.01\n")
    (run_dir / "report.html").write_text("<html></html>")
    return run_dir


def compare_run(change=lambda run_dir: None, png="figure.png"):
    """compare.py on a finished run, its files changed by `change`, with --png tmp/`png`."""
    def make(tmp, folder, run):
        run_dir = finished_run(tmp / "runs" / "r1")
        change(run_dir)
        return [str(run_dir), "--png", str(tmp / png)]
    return make


def compare_args(*given):
    return lambda tmp, folder, run: list(given)


def unfinished_group(tmp, folder, run):
    """A group folder as train_fastai.py leaves it when its first run is refused: empty."""
    (tmp / "runs" / "20250101-120000-lr-group").mkdir(parents=True)
    return [str(tmp / "runs" / "20250101-120000-lr-group"), "--png", str(tmp / "figure.png")]


def compare_out_is_a_file(tmp, folder, run):
    """compare.py with its default figure under an --out that is a file."""
    (tmp / "runs-file").write_text("not a folder")
    return [str(finished_run(tmp / "runs" / "r1")), "--out", str(tmp / "runs-file")]


def compare_index(text):
    """compare.py over the runs of tmp/runs/index.csv, which holds `text`."""
    def make(tmp, folder, run):
        finished_run(tmp / "runs" / "r1")
        (tmp / "runs" / "index.csv").write_text(text)
        return ["--out", str(tmp / "runs"), "--png", str(tmp / "figure.png")]
    return make


def resume_after_the_cache_was_cleaned(tmp, folder, run):
    """An interrupted run in --out tmp/runs whose folder in the cache is gone, as is the archive it
    was given."""
    (tmp / "runs").mkdir()
    run_dir = interrupted_run(tmp / "runs", epochs=2)
    config = json.loads((run_dir / "config.json").read_text())
    given = {"data": str(tmp / "cache" / "unpacked" / "x-0123456789ab" / "cifar10"), "data_given": str(tmp / "x.tgz")}
    (run_dir / "config.json").write_text(json.dumps({**config, **given}))
    return ["--resume", str(run_dir)]
