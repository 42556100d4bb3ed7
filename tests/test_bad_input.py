"""Every kind of bad input a user can hand us, in one table: what the tool refuses (a one-line
`error:` naming the problem and the fix, exit 2, no traceback) and what it repairs with a warning.

A row is (tool, make, outcome, expected text, check): `make(tmp, data, run)` builds the input and
returns the command line; tools "train", "predict" and "compare" run the CLIs, "data" builds the
DataLoaders. A repair's check looks at what was made: the DataLoaders, or a finished training run's
folder."""
import errno
import io
import json
import os
import pickle
import shutil
import signal
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError

import compare
import predict
from cifar10_fast.core import files, settings
from cifar10_fast.core.errors import DataError, unexpected_line
from cifar10_fast.core.lifecycle import resume_command
from cifar10_fast.data.loaders import cifar10_dataloaders
from cifar10_fast.data.sources import cifar10_folder
from tests.conftest import CLASSES, GIVEN_LRS, one_line_error, write_folder, write_python_batches, write_tgz
from train_fastai import main

MARKER = "pwned"  # what a malicious pickle would create


class Payload:
    """Unpickling this creates the file `name` (MARKER unless told) in `where`: code run from a data file."""
    def __init__(self, where, name=MARKER):
        self.where, self.name = where, name

    def __reduce__(self):
        return (open, (str(self.where / self.name), "w"))


def data(folder):
    return ["--data", str(folder)]


# Data paths --------------------------------------------------------------------------------

def missing(tmp, folder, run):
    return data(tmp / "nope")


def empty_folder(tmp, folder, run):
    (tmp / "empty").mkdir()
    return data(tmp / "empty")


def file_not_folder(tmp, folder, run):
    (tmp / "x.txt").write_text("hello")
    return data(tmp / "x.txt")


def wrong_layout(tmp, folder, run):
    (folder / "train").rename(folder / "training")
    return data(folder)


def one_class(tmp, folder, run):
    return data(write_folder(tmp / "one", classes=["cat"]))


def more_classes(tmp, folder, run):
    return data(write_folder(tmp / "eleven", classes=[*CLASSES, "zebra"]))


def classes_differ(tmp, folder, run):
    (folder / "test" / "cat").rename(folder / "test" / "kat")
    return data(folder)


def class_without_images(tmp, folder, run):
    for image in (folder / "train" / "cat").iterdir():
        image.unlink()
    return data(folder)


def non_image_files(tmp, folder, run):
    (folder / "train" / "cat" / "notes.txt").write_text("not an image")
    return data(folder)


def corrupt_train_image(tmp, folder, run):
    (folder / "train" / "cat" / "0003.png").write_bytes(b"not a png")
    return data(folder)


def truncated_train_image(tmp, folder, run):
    image = folder / "train" / "dog" / "0001.png"
    image.write_bytes(image.read_bytes()[:60])
    return data(folder)


def corrupt_test_image(tmp, folder, run):
    (folder / "test" / "cat" / "0001.png").write_bytes(b"not a png")
    return data(folder)


def replace_image(folder, image):
    image.save(folder / "train" / "cat" / "0000.png")
    return data(folder)


def grayscale(tmp, folder, run):
    return replace_image(folder, Image.new("L", (32, 32), 70))


def rgba(tmp, folder, run):
    return replace_image(folder, Image.new("RGBA", (32, 32), (70, 70, 70, 9)))


def palette(tmp, folder, run):
    image = Image.new("P", (32, 32), 0)
    image.putpalette([70, 70, 70] * 256)
    return replace_image(folder, image)


def sixteen_bit(tmp, folder, run):
    return replace_image(folder, Image.fromarray(np.full((32, 32), 70 * 256, np.uint16)))


def wrong_size(tmp, folder, run):
    return replace_image(folder, Image.new("RGB", (64, 48), (70, 70, 70)))


def truncated_archive(keep):
    """The tiny data set as a .tgz, cut to its first keep(its size) bytes."""
    def make(tmp, folder, run):
        whole = write_tgz(folder, tmp / "whole.tgz", "cifar10").read_bytes()
        (tmp / "x.tgz").write_bytes(whole[:keep(len(whole))])
        return data(tmp / "x.tgz")
    return make


def archive_escaping_its_folder(tmp, folder, run):
    (tmp / "payload.txt").write_text("outside")
    with tarfile.open(tmp / "x.tgz", "w:gz") as tar:
        tar.add(folder, arcname="cifar10")
        tar.add(tmp / "payload.txt", arcname="../../evil.txt")
    return data(tmp / "x.tgz")


def truncated_python_batch(tmp, folder, run):
    batches = write_python_batches(tmp / "b")
    (batches / "test_batch").write_bytes((batches / "test_batch").read_bytes()[:100])
    return data(batches)


def malicious_python_batch(tmp, folder, run):
    batches = write_python_batches(tmp / "b")
    (batches / "data_batch_1").write_bytes(pickle.dumps(Payload(tmp)))
    return data(batches)


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


# Odd files (1): data quirks and unsafe archives -------------------------------------------

def in_cat_folder(make_entry, *given):
    """A data folder with something odd in train/cat/: `make_entry(train/cat)` makes it; `given`
    flags follow --data."""
    def make(tmp, folder, run):
        make_entry(folder / "train" / "cat")
        return [*data(folder), *given]
    return make


def image_in_subfolder(cat, subfolder="sub"):
    (cat / subfolder).mkdir()
    shutil.copy(cat / "0000.png", cat / subfolder / "0000.png")


def archive_with(member_name):
    """The tiny data set as a .tgz, plus one member named `member_name`."""
    def make(tmp, folder, run):
        with tarfile.open(tmp / "x.tgz", "w:gz") as tar:
            tar.add(folder, arcname="cifar10")
            member = tarfile.TarInfo(member_name)  # tar.add would drop a leading /
            member.size = len(b"outside")
            tar.addfile(member, io.BytesIO(b"outside"))
        return data(tmp / "x.tgz")
    return make


def link_to_a_folder_outside(cat):
    """A link in train/cat/ to a folder beside the data set that holds an image."""
    outside = cat.parents[2] / "outside"
    outside.mkdir()
    shutil.copy(cat / "0000.png", outside / "0000.png")
    os.symlink(outside, cat / "outside")


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


# Hostile input: what a probe with tiny random data sets found -----------------------------

def python_batches(change):
    """The python version, changed by `change(its folder)`."""
    def make(tmp, folder, run):
        batches = write_python_batches(tmp / "b")
        change(batches)
        return data(batches)
    return make


def meta_holding(meta):
    """The python version with `meta` pickled as its batches.meta."""
    return python_batches(lambda batches: (batches / "batches.meta").write_bytes(pickle.dumps(meta)))


def first_class_named(name):
    """The python version with `name` (bytes) for its first class in batches.meta."""
    return meta_holding({b"label_names": [name, *(c.encode() for c in CLASSES[1:])]})


def data_batch_1_holding(n_images, labels):
    """The python version with `n_images` black images and `labels` in its data_batch_1."""
    def rewrite(batches):
        batch = {b"data": np.zeros((n_images, 3 * 32 * 32), np.uint8), b"labels": labels}
        (batches / "data_batch_1").write_bytes(pickle.dumps(batch))
    return python_batches(rewrite)


def first_training_image_without_red(tmp, folder, run):
    """--subset 1 of a data set whose first training image has red 0 everywhere."""
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    pixels[..., 0] = 0
    Image.fromarray(pixels).save(folder / "train" / "airplane" / "0000.png")
    return [*data(folder), "--subset", "1", "--bs", "1"]


# Issue 17, data side: what is recorded is what happened -----------------------------------

def classes_differing_in_case(tmp, folder, run):
    (folder / "train" / "cat").rename(folder / "train" / "Dog")
    (folder / "test" / "cat").rename(folder / "test" / "Dog")
    return data(folder)


def resume_after_the_cache_was_cleaned(tmp, folder, run):
    """An interrupted run in --out tmp/runs whose folder in the cache is gone, as is the archive it
    was given."""
    (tmp / "runs").mkdir()
    run_dir = interrupted_run(tmp / "runs", epochs=2)
    config = json.loads((run_dir / "config.json").read_text())
    given = {"data": str(tmp / "cache" / "unpacked" / "x-0123456789ab" / "cifar10"), "data_given": str(tmp / "x.tgz")}
    (run_dir / "config.json").write_text(json.dumps({**config, **given}))
    return ["--resume", str(run_dir)]


# Repairs: what the data looks like afterwards ----------------------------------------------

def train_images(n):
    return lambda dls: len(dls.train_ds) == n


def data_files(n):
    """A finished training run whose data fingerprint counts `n` files: the images the loader read."""
    return lambda run_dir: json.loads((run_dir / "config.json").read_text())["data_files"] == n


def cat_0000_pixel(value):
    def check(dls):
        i = next(i for i, p in enumerate(dls.train_ds.items) if p.parts[-2:] == ("cat", "0000.png"))
        pixels = dls.train.images[i]
        return pixels.shape == (3, 32, 32) and bool((pixels == value).all())
    return check


REFUSE, REPAIR = "refuse", "repair"
ONE_EPOCH = [*GIVEN_LRS, "--epochs", "1"]  # a training run that repairs its input finishes, in seconds
CASES = {
    # data paths
    "missing path": ("train", missing, REFUSE, "does not exist", None),
    "empty folder": ("train", empty_folder, REFUSE, "neither train/ and test/", None),
    "a file where a folder is expected": ("train", file_not_folder, REFUSE, "not a folder or a .tgz", None),
    "wrong layout": ("train", wrong_layout, REFUSE, "neither train/ and test/", None),
    "fewer than 2 classes": ("train", one_class, REFUSE, "has 1 class folders", None),
    "train and test classes differ": ("train", classes_differ, REFUSE, "different class folders", None),
    "a class folder with no images": ("train", class_without_images, REFUSE, "has no image files", None),
    "corrupt test image": ("train", corrupt_test_image, REFUSE, "cannot read image", None),
    "truncated archive": ("train", truncated_archive(lambda size: size // 2), REFUSE, "is damaged", None),
    "archive escaping its folder": ("train", archive_escaping_its_folder, REFUSE, "refused as unsafe", None),
    "truncated python batch": ("train", truncated_python_batch, REFUSE, "not a readable CIFAR-10 python batch", None),
    "malicious python batch": ("train", malicious_python_batch, REFUSE, "not a readable CIFAR-10 python batch", None),
    "other than 10 classes": ("data", more_classes, REPAIR, "11 class folders", lambda dls: len(dls.vocab) == 11),
    "non-image files mixed in": ("data", non_image_files, REPAIR, "not images", train_images(80)),
    "corrupt training image": ("data", corrupt_train_image, REPAIR, "skipped 1 unreadable", train_images(79)),
    "truncated training image": ("data", truncated_train_image, REPAIR, "skipped 1 unreadable", train_images(79)),
    "grayscale image": ("data", grayscale, REPAIR, "converted to RGB", cat_0000_pixel(70)),
    "RGBA image": ("data", rgba, REPAIR, "converted to RGB", cat_0000_pixel(70)),
    "palette image": ("data", palette, REPAIR, "converted to RGB", cat_0000_pixel(70)),
    "16-bit image": ("data", sixteen_bit, REPAIR, "converted to RGB", cat_0000_pixel(70)),
    "wrong-size image": ("data", wrong_size, REPAIR, "resized to 32x32", cat_0000_pixel(70)),
    # CLI values
    "zero epochs": ("train", flags("--epochs", "0"), REFUSE, "--epochs must be positive", None),
    "negative batch size": ("train", flags("--bs", "-1"), REFUSE, "--bs must be positive", None),
    "peak epoch after the run": ("train", flags("--epochs", "24", "--peak-epoch", "30"), REFUSE,
                                 "--peak-epoch must lie in", None),
    "peak epoch zero": ("train", flags("--peak-epoch", "0"), REFUSE, "--peak-epoch must lie in", None),
    "zero LRMAX": ("train", flags("--lr-max", "0"), REFUSE, "--lr-max must be positive", None),
    "negative LRMIN": ("train", flags("--lr-min=-1e-3"), REFUSE, "--lr-min must be positive", None),
    "LRMIN above LRMAX": ("train", flags("--lr-min", "1e-2", "--lr-max", "1e-3"), REFUSE, "must be below --lr-max",
                          None),
    "negative weight decay": ("train", flags("--wd", "-1"), REFUSE, "--wd must not be negative", None),
    "too few finder iterations": ("train", flags("--finder-iters", "5"), REFUSE, "--finder-iters must be at least",
                                  None),
    "unknown augmentation": ("train", flags("--aug", "magic"), REFUSE, "invalid choice", None),
    "CUDA without a GPU": ("train", flags("--device", "cuda"), REFUSE, "no CUDA GPU", None),
    "not a device": ("train", flags("--device", "toaster"), REFUSE, "is not a device", None),
    "bf16 on the CPU": ("train", flags("--precision", "bf16"), REFUSE, "needs a CUDA GPU", None),
    "no full batch": ("train", flags("--subset", "3", "--bs", "16"), REFUSE, "make no full batch", None),
    "an output folder under a file": ("train", unwritable_out, REFUSE, "file, which is not a folder: give --out a folder",
                                      None),
    "--resume with another configuration": ("train", resume_other_config, REFUSE, "was run with --epochs 2, not 5",
                                            None),
    "--resume a run with no checkpoint": ("train", resume_without_checkpoint(), REFUSE,
                                          "holds no checkpoint.json: its run stopped before its first epoch finished; "
                                          "nothing to resume: start a new run", None),
    "--resume with --runs": ("train", resume_with_runs, REFUSE, "--resume continues one run", None),
    "zero runs": ("train", flags("--runs", "0"), REFUSE, "--runs must be positive", None),
    "sweep of a setting that cannot be swept": ("train", flags("--sweep", "momentum=0.9,0.95"), REFUSE,
                                                "momentum cannot be swept", None),
    "sweep value that is not a number": ("train", flags("--sweep", "lr_max=1e-3,fast"), REFUSE,
                                         "must be float numbers", None),
    "sweep value out of range": ("train", flags("--sweep", "epochs=2,0"), REFUSE, "--epochs must be positive, not 0",
                                 None),
    "the same key swept twice": ("train", flags("--sweep", "wd=0,0.1", "--sweep", "wd=1"), REFUSE,
                                 "--sweep wd is given twice", None),
    "target accuracy as a percentage": ("train", flags("--target-acc", "94"), REFUSE, "--target-acc is a fraction",
                                        None),
    "label smoothing of 1": ("train", flags("--label-smoothing", "1"), REFUSE, "--label-smoothing must lie in [0, 1)",
                             None),
    "unknown preset": ("train", flags("--preset", "fastest"), REFUSE, "invalid choice", None),
    "finder with several runs": ("train", flags("--find-lr", "--runs", "2"), REFUSE,
                                 "--find-lr runs the LR range test once", None),
    # Issue 9, train side
    "--resume with --sweep": ("train", resume_with_sweep, REFUSE, "--resume continues one run", None),
    "checkpoint.json beyond the run": ("train", checkpoint_saying(epochs_done=3), REFUSE, "says 3 epochs are done", None),
    "checkpoint.json with part of an epoch": ("train", checkpoint_saying(epochs_done=1.5), REFUSE, "says 1.5 epochs are done",
                                              None),
    "checkpoint.json with no epoch done": ("train", checkpoint_saying(epochs_done=0), REFUSE, "says 0 epochs are done", None),
    "checkpoint.json without its epochs' lines": ("train", checkpoint_saying(history=None), REFUSE,
                                                  "lacks the lines, LRs or seconds of its 1 epochs", None),
    "checkpoint.json without its LRs": ("train", checkpoint_saying(lrs=[]), REFUSE, "lacks the lines, LRs", None),
    "a seed beyond 64 bits": ("train", flags("--seed", str(2**64)), REFUSE, "--seed must lie in [0, ", None),
    "a negative seed": ("train", flags("--seed", "-1"), REFUSE, "--seed must lie in [0, ", None),
    "more workers than cores": ("train", flags("--workers", "9999"), REFUSE, "--workers 9999 is more than the", None),
    "a --name too long for a folder": ("train", flags("--name", "x" * 300), REFUSE, "--name is 300 bytes long", None),
    "config.json with a width that is text": ("train", config_saying(width="8"), REFUSE,
                                              "holds width = '8', which --width cannot give", None),
    "config.json with an unknown augmentation": ("train", config_saying(aug="bogus"), REFUSE,
                                                 "holds aug = 'bogus', which --aug cannot give", None),
    "config.json with tta that is not true or false": ("train", config_saying(tta=1), REFUSE,
                                                       "holds tta = 1, which --tta cannot give", None),
    "checkpoint.json that is not JSON": ("train", unreadable_checkpoint, REFUSE,
                                         "checkpoint.json is damaged (UnicodeDecodeError", None),
    "--resume into another --out": ("train", resume_into_another_out, REFUSE, "belongs to --out", None),
    "--width too large for memory": ("train", flags("--width", "100000"), REFUSE,
                                     "out of memory for CustomResNet --width 100000 in batches of --bs 16", None),
    "infinite LRMAX": ("train", flags("--lr-max", "inf"), REFUSE, "--lr-max must be a finite number, not inf", None),
    "NaN weight decay": ("train", flags("--wd", "nan"), REFUSE, "--wd must be a finite number, not nan", None),
    "infinite weight decay": ("train", flags("--wd", "inf"), REFUSE, "--wd must be a finite number, not inf", None),
    "NaN peak epoch": ("train", flags("--peak-epoch", "nan"), REFUSE, "--peak-epoch must be a finite number", None),
    "NaN label smoothing": ("train", flags("--label-smoothing", "nan"), REFUSE,
                            "--label-smoothing must be a finite number", None),
    "NaN target accuracy": ("train", flags("--target-acc", "nan"), REFUSE, "--target-acc must be a finite number",
                            None),
    "swept LR that is not finite": ("train", flags("--sweep", "lr_max=1e-3,inf"), REFUSE,
                                    "--lr-max must be a finite number, not inf", None),
    "--name with a path separator": ("train", flags("--name", "a/b"), REFUSE, "--name a/b is not a plain folder name",
                                     None),
    "--name ..": ("train", flags("--name", ".."), REFUSE, "--name .. is not a plain folder name", None),
    "a damaged index.csv, found before training": ("train", index_saying("run;seed\nr1;0\n"), REFUSE,
                                                    "index.csv is damaged (no column run)", None),
    "index.csv that is a folder": ("train", index_that_is_a_folder, REFUSE,
                                   "index.csv: Is a directory: fix the path", None),
    # Issue 17, class 1: a resume says why there is nothing to resume
    "--resume a run killed before it saved a checkpoint": (
        "train", resume_without_checkpoint({"history.csv": "epoch,accuracy\n0,0.1\n1,0.2\n"}), REFUSE,
        "its run was killed (SIGKILL, out of memory, power loss) or crashed after 2 epoch(s), before it saved one "
        "(a run saves one on Ctrl-C or SIGTERM, and every 60 s of fitting); nothing to resume: start a new run", None),
    "--resume a finished run": ("train", resume_without_checkpoint({"report.html": "<html></html>"}), REFUSE,
                                "its run finished, so there is nothing to resume", None),
    "--resume an LR range test": ("train", config_saying(find_lr=True, checkpoint=None), REFUSE,
                                  "it is an LR range test (--find-lr), which has nothing to resume", None),
    "--resume a folder that is not a run": ("train", lambda tmp, folder, run: ["--resume", str(folder)], REFUSE,
                                            "holds no checkpoint.json and no config.json: give the folder of an "
                                            "interrupted run", None),
    "checkpoint.json with a fit_done that is not true or false": ("train", checkpoint_saying(fit_done=1), REFUSE,
                                                                  "holds a fit_done or time_to_accuracy that a run "
                                                                  "cannot write", None),
    "checkpoint.json with a milestone that is not a number": (
        "train", checkpoint_saying(time_to_accuracy={"reached": {"ninety": [1, 2.0]}, "stopped_early": False}),
        REFUSE, "holds a fit_done or time_to_accuracy that a run cannot write", None),
    # predict inputs
    "missing run folder": ("predict", no_run_folder, REFUSE, "is not a folder", None),
    "model file that is not safetensors": ("predict", not_safetensors, REFUSE, "does not hold CustomResNet", None),
    "a pickle named model.safetensors": ("predict", pickle_as_model, REFUSE, "does not hold CustomResNet", None),
    "weights of another model": ("predict", foreign_weights, REFUSE, "does not hold CustomResNet", None),
    "only a (malicious) export.pkl": ("predict", only_a_malicious_export, REFUSE, "only with --pickle", None),
    "missing classes.json": ("predict", missing_classes, REFUSE, "classes.json is missing", None),
    "image it cannot open": ("predict", unreadable_image, REFUSE, "cannot read image", None),
    "missing image": ("predict", predict_args("nope.png"), REFUSE, "does not exist", None),
    "topk zero": ("predict", predict_args("x.png", "--topk", "0"), REFUSE, "--topk must be at least 1", None),
    "an image path that is not a regular file": ("predict", predict_args("/dev/null"), REFUSE,
                                                 "/dev/null is not a regular file", None),
    # odd files (1): data quirks and unsafe archives
    "a subfolder in a class folder": ("data", in_cat_folder(image_in_subfolder), REPAIR,
                                      "folders inside class folders", train_images(80)),
    "a folder named like an image": ("data", in_cat_folder(lambda cat: image_in_subfolder(cat, "odd.jpg")), REPAIR,
                                     "folders inside class folders", train_images(80)),
    "a symlink loop": ("data", in_cat_folder(lambda cat: os.symlink("..", cat / "loop")), REPAIR,
                       "folders inside class folders", train_images(80)),
    "an image name linked to itself": ("data", in_cat_folder(lambda cat: os.symlink("self.png", cat / "self.png")),
                                       REPAIR, "not images", train_images(80)),
    "an image name linked to nothing": ("data", in_cat_folder(lambda cat: os.symlink("gone.png", cat / "link.png")),
                                        REPAIR, "not images", train_images(80)),
    "archive member with an absolute name": ("train", archive_with("/evil.txt"), REFUSE, "refused as unsafe", None),
    # odd files (2): predict's outputs and files
    "--csv into a missing folder": ("predict", predict_csv("nope/x.csv"), REFUSE,
                                    "give --csv a file in an existing folder", None),
    "--csv naming a folder": ("predict", predict_csv("images"), REFUSE,
                              "is a folder: give --csv a file name", None),
    "a malicious export.pkl under --pickle": ("predict", malicious_export, REFUSE,
                                              "is not a learner that train_fastai.py exported", None),
    "--csv naming a link that leads nowhere": ("predict", csv_link_to_nowhere, REFUSE, "exists already (as a link)",
                                               None),
    "classes.json with a zero std": ("predict", classes_json(std=[0.25, 0, 0.25]), REFUSE, "the std at least 1e-06",
                                     None),
    "classes.json with a negative std": ("predict", classes_json(std=[0.25, -0.25, 0.25]), REFUSE,
                                         "the std at least 1e-06", None),
    "classes.json with a std near 0": ("predict", classes_json(std=[1e-308] * 3), REFUSE, "the std at least 1e-06",
                                       None),
    "classes.json with a huge mean": ("predict", classes_json(mean=[1e308] * 3), REFUSE, "the mean in [0, 1]", None),
    "classes.json with the classes as a string": ("predict", classes_json(classes="abcdefghij"), REFUSE,
                                                  '"classes" must be a list of class names', None),
    "classes.json with the classes as an object": ("predict", classes_json(classes=dict.fromkeys(CLASSES, 1)),
                                                   REFUSE, '"classes" must be a list of class names', None),
    "classes.json with an empty class name": ("predict", classes_json(classes=[*CLASSES[:9], ""]), REFUSE,
                                              "each a non-empty string", None),
    "classes.json with a class named twice": ("predict", classes_json(classes=[*CLASSES[:9], "cat"]), REFUSE,
                                              '"classes" names cat more than once', None),
    "classes.json with a NaN std": ("predict", classes_json(std=[0.25, float("nan"), 0.25]), REFUSE,
                                    "3 finite numbers", None),
    "classes.json with 2 std values": ("predict", classes_json(std=[0.25, 0.25]), REFUSE, "3 finite numbers", None),
    "classes.json that is not JSON": ("predict", classes_json_not_json, REFUSE,
                                      "classes.json cannot be read as class names", None),
    "classes.json with more classes than outputs": ("predict", classes_json(classes=[*CLASSES, "zebra"]), REFUSE,
                                                    "names 11 classes, but", None),
    # odd files (3): compare's files and outputs
    "a damaged summary.json": ("compare", compare_run(change=lambda r: (r / "summary.json").write_text("{")), REFUSE,
                               "summary.json is damaged", None),
    "a damaged index.csv": ("compare", compare_index("run,seed\nr1,0\nr2,0,extra,fields\n"), REFUSE,
                            "index.csv is damaged", None),
    "an index.csv with no run column": ("compare", compare_index("seed\n0\n"), REFUSE, "no column run", None),
    "a crashed run given to compare": ("compare", compare_run(change=lambda r: (r / "report.html").unlink()),
                                       REFUSE, "is not a finished training run (no report.html)", None),
    "--png into a missing folder": ("compare", compare_run(png="nope/x.png"), REFUSE,
                                    "give --png a file in an existing folder", None),
    "--png with a suffix matplotlib cannot write": ("compare", compare_run(png="figure.txt"), REFUSE,
                                                    "matplotlib cannot write a figure as figure.txt", None),
    "an unknown flag to compare": ("compare", compare_args("--bogus"), REFUSE, "unrecognized arguments: --bogus",
                                   None),
    "a group folder whose runs did not finish": ("compare", unfinished_group, REFUSE,
                                                 "is a group whose runs did not all finish (no summary.json), and "
                                                 "none of its runs is finished", None),
    "an --out that is a file (an error no check foresees)": ("compare", compare_out_is_a_file, REFUSE,
                                                             "runs-file: File exists: fix the path", None),
    # hostile input: what a probe found
    "a class name in batches.meta that leads out of the cache": ("train", first_class_named(b"../../../../evil.txt"),
                                                                 REFUSE, "batches.meta is refused as unsafe", None),
    "a class name in batches.meta with a backslash": ("train", first_class_named(b"a\\b"), REFUSE,
                                                      "batches.meta is refused as unsafe", None),
    "a class name in batches.meta with a NUL": ("train", first_class_named(b"a\0b"), REFUSE,
                                                "batches.meta is refused as unsafe", None),
    "a class name in batches.meta that is not UTF-8": ("train", first_class_named(b"\xffcat"), REFUSE,
                                                       "batches.meta is refused as unsafe", None),
    "an empty class name in batches.meta": ("train", first_class_named(b""), REFUSE,
                                            "batches.meta is refused as unsafe", None),
    "a class named . in batches.meta": ("train", first_class_named(b"."), REFUSE, "batches.meta is refused as unsafe",
                                        None),
    "a hidden class name in batches.meta": ("train", first_class_named(b".cat"), REFUSE,
                                            "batches.meta is refused as unsafe", None),
    "one class name ten times in batches.meta": ("train", meta_holding({b"label_names": [b"cat"] * 10}), REFUSE,
                                                 "batches.meta names class 'cat' more than once", None),
    "batches.meta that is not a pickle": ("train", python_batches(lambda b: (b / "batches.meta").write_bytes(b"junk")),
                                          REFUSE, "batches.meta is not a readable CIFAR-10 batches.meta", None),
    "batches.meta holding a list": ("train", meta_holding([b"cat", b"dog"]), REFUSE,
                                    "batches.meta is not a readable CIFAR-10 batches.meta (TypeError)", None),
    "batches.meta naming 2 classes for 10": ("train", meta_holding({b"label_names": [b"cat", b"dog"]}), REFUSE,
                                             "outside the 2 classes 0-1", None),
    "batches.meta naming a class no image has": (
        "train", meta_holding({b"label_names": [*map(str.encode, CLASSES), b"zebra"]}), REFUSE,
        "train/zebra has no image files", None),
    "a label above the classes in a python batch": ("train", data_batch_1_holding(10, [12] + [0] * 9), REFUSE,
                                                    "data_batch_1 is damaged (label 12, outside the 10 classes", None),
    "a label of -1 in a python batch": ("train", data_batch_1_holding(10, [-1] + [0] * 9), REFUSE,
                                        "data_batch_1 is damaged (label -1, outside the 10 classes", None),
    "a python batch with more labels than images": ("train", data_batch_1_holding(5, [0] * 7), REFUSE,
                                                    "data_batch_1 is damaged (5 images but 7 labels)", None),
    "a python batch with no images": ("train", data_batch_1_holding(0, []), REFUSE,
                                      "data_batch_1 is damaged (it holds no images)", None),
    "an archive cut to its first 100 bytes": ("train", truncated_archive(lambda size: 100), REFUSE, "is damaged",
                                              None),
    "a symlink loop, through a training run": (
        "train", in_cat_folder(lambda cat: os.symlink("..", cat / "loop"), *ONE_EPOCH), REPAIR,
        "folders inside class folders", data_files(100)),
    "a link to a missing image, through a training run": (
        "train", in_cat_folder(lambda cat: os.symlink("/nonexistent/x.png", cat / "dead.png"), *ONE_EPOCH), REPAIR,
        "not images", data_files(100)),
    "a link to a folder outside the data, through a training run": (
        "train", in_cat_folder(link_to_a_folder_outside, *ONE_EPOCH), REPAIR, "folders inside class folders",
        data_files(100)),
    "training images with a constant channel": ("train", first_training_image_without_red, REFUSE,
                                                "have std 0 in the red channel", None),
    # issue 17, data side
    "--data that is neither a folder nor a regular file": ("train", lambda tmp, folder, run: data("/dev/null"),
                                                            REFUSE, "/dev/null is neither a folder nor a regular file",
                                                            None),
    "class folders that differ only in case": ("train", classes_differing_in_case, REFUSE,
                                               "has class folders 'Dog' and 'dog', whose names differ only in case",
                                               None),
    "class names in batches.meta that differ only in case": (
        "train", meta_holding({b"label_names": [b"Cat", *(c.encode() for c in CLASSES[1:])]}), REFUSE,
        "batches.meta names classes 'Cat' and 'cat', which differ only in case", None),
    "--subset above the training images": ("train", flags("--subset", "81"), REFUSE,
                                           "--subset 81 is more than the 80 training images", None),
    "a sweep with a --subset above the training images": ("train", flags("--sweep", "subset=40,81"), REFUSE,
                                                          "--subset 81 is more than the 80 training images", None),
    "--resume after the cache was cleaned, its archive gone": (
        "train", resume_after_the_cache_was_cleaned, REFUSE,
        "x.tgz, which is not there any more (nor the folder it was unpacked into): give --data with a copy of it",
        None),
    # issue 17, class 3: refused before any work (tests/test_refusals.py: before torch loads)
    "--device mps, which torch knows and the recipe does not run on": (
        "train", flags("--device", "mps"), REFUSE, "--device mps is not a device this tool trains on", None),
    "--device xla": ("train", flags("--device", "xla"), REFUSE, "--device xla is not a device this tool trains on",
                     None),
    "--device meta": ("train", flags("--device", "meta"), REFUSE, "--device meta is not a device this tool trains on",
                      None),
    "--device cuda:-1": ("train", flags("--device", "cuda:-1"), REFUSE, "is not a device this tool trains on", None),
    "fp16 with --device cpu": ("train", flags("--device", "cpu", "--precision", "fp16"), REFUSE,
                               "--precision fp16 needs a CUDA GPU (fastai's mixed precision), and --device cpu", None),
    # issue 17, class 4: what is recorded is what happened
    "a swept value given twice": ("train", flags("--sweep", "lr_max=1e-2,1e-2"), REFUSE,
                                  "--sweep lr_max=1e-2,1e-2 gives lr_max 0.01 twice", None),
    "a swept value given twice in two forms": ("train", flags("--sweep", "wd=0.01,1e-2,0.1"), REFUSE,
                                               "gives wd 0.01 twice", None),
    "--tta with --find-lr": ("train", flags("--find-lr", "--tta"), REFUSE,
                             "--find-lr runs only the LR range test, which trains no model to evaluate: drop --tta",
                             None),
    "--target-acc with --find-lr": ("train", flags("--find-lr", "--target-acc", "0.9"), REFUSE, "drop --target-acc",
                                    None),
    "finder iterations too few for the LR rule": ("train", flags("--finder-iters", "15"), REFUSE,
                                                  "--finder-iters must be at least 23, not 15", None),
    "a weight decay that flips the weights at LRMAX": (
        "train", flags("--lr-max", "1e-3", "--wd", "1e308"), REFUSE,
        "--lr-max 0.001 with --wd 1e+308: decoupled weight decay scales every weight by 1 - LR x wd a step, -1e+305 "
        "here, which zeroes or flips the weights instead of decaying them; keep LR x wd below 1: --wd below 1000 (",
        None),
    "a weight decay just too large for LRMAX": ("train", flags("--lr-max", "1e-2", "--wd", "100"), REFUSE,
                                                "keep LR x wd below 1: --wd below 100, or --lr-max below 0.01", None),
    "an LRMAX too large for the recipe's weight decay": ("train", flags("--lr-min", "10", "--lr-max", "1000"), REFUSE,
                                                         "--wd below 0.001, or --lr-max below 100 (the recipe's", None),
    "a weight decay too large for any LR of the range test": (
        "train", flags("--wd", "1e308"), REFUSE, "the LR range test's lowest LR, 1e-07, with --wd 1e+308", None),
}


def run_cli(tool, argv, tmp_path, outcome):
    """`tool`'s CLI on `argv`: a refusal exits with status 2; a training run that repairs its input
    finishes, and its run folder is returned."""
    cli = {"train": main, "predict": predict.main, "compare": compare.main}[tool]
    extra = ["--out", str(tmp_path / "runs"), "--width", "8", "--bs", "16"] if tool == "train" else []
    if outcome == REPAIR:
        cli([*extra, *argv])
        run_dir, = (path for path in (tmp_path / "runs").iterdir() if path.is_dir())
        return run_dir
    with pytest.raises(SystemExit) as e:
        cli([*extra, *argv])
    assert e.value.code == 2


@pytest.mark.parametrize("tool,make,outcome,text,check", CASES.values(), ids=CASES.keys())
def test_bad_input(tmp_path, tiny_folder, run_dir, images, capsys, tool, make, outcome, text, check):
    argv = make(tmp_path, tiny_folder, run_dir)
    if tool == "data":
        made, _ = cifar10_dataloaders(cifar10_folder(argv[1]), bs=8, device="cpu")
    else:
        made = run_cli(tool, argv, tmp_path, outcome)
    err = capsys.readouterr().err
    if outcome == REFUSE:
        last = err.strip().splitlines()[-1]
        assert last.startswith("error: ") and text in last, err
        assert "Traceback" not in err and "usage:" not in err
    else:
        assert any(line.startswith("warning: ") and text in line for line in err.splitlines()), err
        assert check(made)
    assert not any(tmp_path.rglob(MARKER)) and not any(tmp_path.rglob("evil.txt"))


def test_sync_debug_with_fp16_is_refused_where_a_gpu_may_be(tmp_path, tiny_folder, monkeypatch, capsys):
    """(Without one, fp16 itself is refused first.)"""
    monkeypatch.setattr(settings, "no_cuda_here", lambda: False)
    run_cli("train", [*data(tiny_folder), "--precision", "fp16", "--sync-debug"], tmp_path, REFUSE)
    assert "fp16's gradient scaler reads the GPU at every step" in capsys.readouterr().err


def test_a_damaged_index_is_refused_before_a_run_folder_exists(tmp_path, tiny_folder):
    """Found at the end, it cost the whole run's index row (and the last line of the run)."""
    argv = index_saying("run;seed\nr1;0\n")(tmp_path, tiny_folder, None)
    run_cli("train", argv, tmp_path, REFUSE)
    assert [path.name for path in (tmp_path / "runs").iterdir()] == ["index.csv"]


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "empty").mkdir()  # a missing --data is a flag's error, refused before torch loads
    with pytest.raises(DataError, match="neither train/ and test/"):
        main(["--data", str(tmp_path / "empty"), "--debug"])
    with pytest.raises(predict.PredictError, match="is not a folder"):
        predict.main(["--run", str(tmp_path / "nope"), str(tmp_path), "--debug"])
    with pytest.raises(compare.CompareError, match="is not a folder"):
        compare.main([str(tmp_path / "nope"), "--debug"])


# Issue 9, train side: failures no check before the run can foresee -------------------------

def train_until(monkeypatch, name, failure, tmp_path, tiny_folder, *debug):
    """A run whose step `name` ("fit", or "outputs.write_export": as it is called) raises `failure` instead."""
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(f"train_fastai.{name}" if name == "fit" else f"cifar10_fast.training.{name}", fail)
    main([*debug, "--data", str(tiny_folder), "--out", str(tmp_path / "runs"), "--width", "8", "--bs", "16",
          *GIVEN_LRS, "--epochs", "1"])


def test_out_of_memory_in_the_fit_names_width_and_bs(tmp_path, tiny_folder, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:
        train_until(monkeypatch, "fit", torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
                    tmp_path, tiny_folder)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == ("error: out of memory for CustomResNet --width 8 in "
                                                                "batches of --bs 16: lower --width (64 is the recipe) "
                                                                "or --bs")


def test_a_file_system_failure_midway_is_one_line_and_keeps_what_the_run_finished(tmp_path, tiny_folder, monkeypatch,
                                                                                   capsys):
    """A folder made read-only after the weights were written: the run says so in one line, with
    how to resume it once that is mended, and keeps its summary and weights; --debug shows where
    it happened."""
    denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(tmp_path / "runs" / "x" / "export.pkl"))
    with pytest.raises(SystemExit) as e:
        train_until(monkeypatch, "outputs.write_export", denied, tmp_path, tiny_folder)
    assert e.value.code == 2
    err = capsys.readouterr().err
    run_dir, = (tmp_path / "runs").iterdir()
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"error: {denied.filename}: Permission denied: fix its permissions, or choose a folder you can write to; then "
        f"resume the run, which is saved: {resume_command(run_dir)} (rerun with --debug for the traceback)")
    for name in ("config.json", "history.csv", "curves.png", "summary.json", "model.safetensors"):
        assert (run_dir / name).is_file(), name
    with pytest.raises(PermissionError):
        train_until(monkeypatch, "outputs.write_export", denied, tmp_path, tiny_folder, "--debug")


# Issue 17, class 2: the machine's failures name the path and the fix -------------------------

def test_a_full_disk_while_the_weights_are_written_is_one_line_naming_them_and_leaves_no_part(tmp_path, tiny_folder,
                                                                                            monkeypatch, capsys):
    """safetensors' own error (not an OSError) on a full drive: what it says, as it says it."""
    def full_disk(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr("cifar10_fast.training.fit.save_file", full_disk)
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tiny_folder), "--out", str(tmp_path / "runs"), "--width", "8", "--bs", "16", *GIVEN_LRS,
              "--epochs", "1"])
    err = capsys.readouterr().err
    run_dir, = (tmp_path / "runs").iterdir()
    assert e.value.code == 2 and "Traceback" not in err and err.strip().splitlines()[-1] == (
        f"error: {run_dir / 'model.safetensors'}: No space left on device: free disk space on its drive (rerun with "
        "--debug for the traceback)")
    assert not [path.name for path in run_dir.iterdir() if "tmp" in path.name]


def test_a_programming_error_keeps_its_traceback(tmp_path, tiny_folder, monkeypatch):
    with pytest.raises(KeyError):
        train_until(monkeypatch, "outputs.write_export", KeyError("a bug of ours"), tmp_path, tiny_folder)


def test_text_in_another_encoding_is_one_line_naming_it():
    error = UnicodeDecodeError("utf-8", b"\xffcat.png", 0, 1, "invalid start byte")
    assert unexpected_line(error) == ("b'\\xffcat.png': invalid start byte: use UTF-8 names and files (rerun with --debug "
                               "for the traceback)")


# Issue 17, data side: interruptions and the machine's failures while the data is set up ----

def test_a_sweep_refused_for_its_subset_is_refused_before_any_folder(tmp_path, tiny_folder, capsys):
    run_cli("train", [*data(tiny_folder), *ONE_EPOCH, "--sweep", "subset=40,81"], tmp_path, REFUSE)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_resume_after_the_cache_was_cleaned_names_the_data_it_was_given(tmp_path, tiny_folder, monkeypatch,
                                                                           capsys):
    """...and never takes CIFAR10_DATA's instead: that is a new run's default."""
    argv = resume_after_the_cache_was_cleaned(tmp_path, tiny_folder, None)
    monkeypatch.setenv("CIFAR10_DATA", str(tiny_folder))
    run_cli("train", argv, tmp_path, REFUSE)
    run_dir = argv[-1]
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {run_dir} was run on {tmp_path / 'x.tgz'}, which is not there any more (nor the folder it was "
        "unpacked into): give --data with a copy of it to resume the run (see --help)"]


def test_sigterm_while_unpacking_is_one_line_saying_what_was_kept(tmp_path, tiny_folder, isolated_cache, monkeypatch,
                                                                  capsys):
    from cifar10_fast.data import archives
    archive = write_tgz(tiny_folder, tmp_path / "x.tgz", "cifar10")

    def sigterm(*args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)

    monkeypatch.setattr(archives, "extract_with_tar", sigterm)
    monkeypatch.setattr(archives, "extract_with_tarfile", sigterm)
    unhandled = signal.signal(signal.SIGTERM, lambda *args: pytest.fail("SIGTERM reached no handler of unpack's"))
    try:
        with pytest.raises(SystemExit) as e:
            main([*data(archive), "--out", str(tmp_path / "runs")])
    finally:
        signal.signal(signal.SIGTERM, unhandled)
    assert e.value.code == 130 and capsys.readouterr().err.splitlines() == [
        f"interrupted while unpacking {archive}: nothing of it is kept; run the same command again to start it over"]
    assert [p.name for p in (isolated_cache / "unpacked").iterdir()] == [] and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("code,line", [
    (errno.EROFS, "cannot write the cache folder {} (Read-only file system): set CIFAR10_CACHE to a folder you can "
                  "write to"),
    (errno.ENOSPC, "the disk holding {} is full (No space left on device): free space on it, or set CIFAR10_CACHE to "
                   "a folder on a disk with room (CIFAR-10 takes about 0.5 GB there)")])
def test_a_cache_that_cannot_be_written_is_one_line_naming_it(tmp_path, tiny_folder, isolated_cache, monkeypatch,
                                                              capsys, code, line):
    """Unpacking needs the cache: a read-only one (a read-only home) or a full disk stops the run."""
    archive = write_tgz(tiny_folder, tmp_path / "x.tgz", "cifar10")
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if str(path).startswith(str(isolated_cache)):
            raise OSError(code, os.strerror(code), str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    with pytest.raises(SystemExit) as e:
        main([*data(archive), "--out", str(tmp_path / "runs")])
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == ["error: " + line.format(isolated_cache / "unpacked")]
# Issue 17, class 5: output a person can read ----------------------------------------------

CJK_CLASSES = ["飛行機", "自動車", "鳥", "猫", "鹿", "犬", "蛙", "馬", "船", "トラック"]


def test_class_names_in_cjk_give_one_warning_line_not_one_per_character(tmp_path, monkeypatch, capsys):
    """Without a font that has them, matplotlib warned once per character of the confusion matrix
    and the misclassified images: 12 lines and more."""
    monkeypatch.setattr(files, "shown_as_boxes", set())
    folder = write_folder(tmp_path / "cjk", classes=CJK_CLASSES)
    run_cli("train", ["--data", str(folder), *ONE_EPOCH], tmp_path, REPAIR)
    err = capsys.readouterr().err
    assert "Glyph" not in err
    if not any(all(c in charmap for c in "".join(CJK_CLASSES)) for _, charmap in files.installed_charmaps()):
        warning, = (line for line in err.splitlines() if "as boxes" in line)
        assert warning.startswith("warning: the figures draw 17 characters of their labels as boxes")


def test_csv_into_a_folder_that_is_not_writable_is_refused_before_any_work(tmp_path, run_dir, images, monkeypatch,
                                                                           capsys):
    """It printed every prediction, then failed naming its temporary file (.x.csv.tmp)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root writes anyway: see the folder as a user would
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode: real_access(path, mode) and Path(path) != locked)
    try:
        line = one_line_error(predict.main, ["--run", str(run_dir), str(images), "--csv", str(locked / "x.csv")],
                              capsys)
    finally:
        locked.chmod(0o755)
    assert line == f"error: {locked} is not writable for you: give --csv a file in a folder you can write to"
    assert not any(locked.iterdir())
