"""The bad inputs of the data a run reads: paths, layouts, images, archives, python batches."""
import io
import json
import os
import pickle
import shutil
import tarfile

import numpy as np
from PIL import Image

from tests.conftest import CLASSES, write_folder, write_python_batches, write_tgz

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


