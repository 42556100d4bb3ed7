"""A CIFAR-10 folder set up once: listed and checked, its files' sizes and modification times read,
its images decoded with every core and cached in CIFAR10_CACHE, so that a run on a warm cache sets
its data up in about a second, and a --runs/--sweep group once for all its runs.

The one listing gives all that a run takes from the files: the items (the image files directly in
train/<class>/ and test/<class>/; folders inside a class folder are never read, so a copy in one,
or a link that loops back up the tree, never enters the data twice), their labels and split, and
the data's fingerprint. The cache holds each file's pixels by its name, size and modification
time, so that a changed file is noticed and decoded again, alone.
"""
import hashlib
import os
import secrets
import zipfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from cifar10_fast.core.errors import DataError, warn
from cifar10_fast.data.cache import (
    built_once,
    cache_problem,
    cache_root,
    entry_name,
    interruptible,
    remove_abandoned,
    write_atomically,
)
from cifar10_fast.data.images import (
    IMAGE_SIZE,
    UnreadableImage,
    has_image_extension,
    read_rgb32,
    read_rgb32_all,
    reading_processes,
)
from cifar10_fast.data.layout import SPLITS, check_classes


@dataclass
class DecodedFolder:
    """A folder in fastai's layout, listed and decoded: what every run on it shares."""
    folder: Path
    classes: list
    names: list  # the image files, relative to the folder, by split, class and file name
    sizes: np.ndarray
    labels: np.ndarray  # each file's class, as an index into classes
    is_test: np.ndarray
    images: np.ndarray  # uint8 (N, 32, 32, 3), zeros where a file cannot be read
    readable: np.ndarray
    train_stats: tuple = None  # channel_stats of every readable training image, cached with the pixels

    made_paths: dict = field(default_factory=dict, repr=False)  # row: Path, those made so far

    def paths(self, rows):
        """fastai's items: the Path of the file at each of `rows`, made once for all the runs on the
        folder, and only for the rows a run uses (60,000 Paths take a few tenths of a second)."""
        missing = [row for row in rows if row not in self.made_paths]
        self.made_paths.update(zip(missing, map(self.folder.joinpath, (self.names[row] for row in missing))))
        return [self.made_paths[row] for row in rows]

    def nchw(self, rows):
        """The images at `rows` as uint8 (N, 3, 32, 32) torch images, a view of an (N, 32, 32, 3)
        copy (channels-last): a warm cache's pixels are a read-only map of its file, which a tensor
        must not write into."""
        return torch.from_numpy(self.images[rows]).permute(0, 3, 1, 2)

    def channel_stats(self, rows):
        """channel_stats of the images at `rows`; of all the readable training images, from the cache."""
        every_training_image = np.flatnonzero(~self.is_test & self.readable)
        if not np.array_equal(np.sort(rows), every_training_image):
            return channel_stats(self.nchw(rows))
        if self.train_stats is None:
            self.train_stats = channel_stats(self.nchw(every_training_image))
        return self.train_stats

    @cached_property
    def fingerprint(self):
        """What identifies the data wherever it lies (another CIFAR10_CACHE unpacks it elsewhere),
        for a --resume to compare: the number of image files the loader reads and a hash of their
        relative names and sizes. What it ignores is left out, and so never followed."""
        listing = sorted(f"{name}\t{size}\n" for name, size in zip(self.names, self.sizes.tolist()))
        return {"data_files": len(listing), "data_sha256": hashlib.sha256("".join(listing).encode()).hexdigest()}

    def check_subset(self, subset, holdout=None):
        training = int((~self.is_test).sum())
        if holdout is not None and holdout >= training:
            raise DataError(f"--holdout {holdout} leaves none of the {training} training images of {self.folder} to "
                            f"train on: give fewer, a tenth ({training // 10}) say")
        available = training - (holdout or 0)
        if subset is not None and subset > available:
            held = f" that --holdout {holdout} leaves" if holdout else ""
            raise DataError(f"--subset {subset} is more than the {available} training images{held} of {self.folder}: "
                            f"give at most {available}, or leave --subset out to train on all of them")

    def rows(self, subset=None, holdout=None):
        """The rows a run uses: the training images class-interleaved (so that the first `subset`
        hold every class), then the test images; or, with a `holdout` (a search's trials), the last
        `holdout` of those training images in place of the test images, class-balanced, the same for
        every trial, and never the test set. An unreadable training image is left out and counted in
        a warning; an unreadable test image is refused: the test set must stay whole."""
        self.check_subset(subset, holdout)
        train = np.flatnonzero(~self.is_test)  # by class, in the classes' order
        rank_in_class = np.concatenate([np.arange(n) for n in np.bincount(self.labels[train])])
        train = train[np.argsort(rank_in_class, kind="stable")]
        held_out, train = (train[len(train) - holdout:], train[:len(train) - holdout]) if holdout else (None, train)
        train = train[:subset]
        if subset is not None and subset < len(self.classes):
            warn(f"--subset {subset} trains on {subset} of the {len(self.classes)} classes, one image each, and tests "
                 f"on all of them: give --subset {len(self.classes)} or more to train on every class")
        test = np.flatnonzero(self.is_test)
        for row in test[~self.readable[test]][:1]:
            refuse_unreadable(self.folder / self.names[row])
        unreadable = train[~self.readable[train]]
        if len(unreadable):
            example = self.folder / self.names[unreadable[0]]
            warn(f"skipped {len(unreadable)} unreadable training images (such as {example}): remove or replace them "
                 "to silence this")
        return train[self.readable[train]], test if held_out is None else held_out[self.readable[held_out]]


def refuse_unreadable(path):
    try:
        read_rgb32(path)
    except UnreadableImage as e:
        raise DataError(str(e)) from e  # train_fastai.py reports a DataError in one line
    raise DataError(f"cannot read image {path}: replace it with an image PIL reads (PNG, JPEG, ...) or remove it")


def decoded_folder(folder):
    """`folder` listed, checked and decoded: from the cache where its files are unchanged. The files
    of a folder that the cache built whole (an unpacked archive, converted batches) never change,
    so where the cache lists the same files, their sizes and times are taken from it rather than
    read again (60,000 calls to stat, 0.3 s on 2 cores)."""
    folder = Path(folder)
    classes, names, counts = list_folder(folder)
    labels = np.repeat(np.tile(np.arange(len(classes)), len(SPLITS)), counts)  # counts: by split, then class
    is_test = np.repeat([split == "test" for split in SPLITS for _ in classes], counts)
    cache = cache_root() / "decoded" / f"{entry_name(folder, stamped=False)}.npz"
    stamps = cached_stamps(cache, names) if built_once(folder) else None
    if stamps is None:
        stamps = file_stamps(folder, names)
    images, readable, train_stats, fresh = cached(cache, np.array(names), stamps)
    data = DecodedFolder(folder, classes, names, stamps[:, 0], labels, is_test, images, readable, train_stats)
    if not fresh.all():
        decode(data, np.flatnonzero(~fresh), stamps, cache)
    return data


def decode(data, rows, stamps, cache):
    """Decode the files at `rows` into `data`, and cache all its pixels with its training images'
    channel statistics."""
    processes = reading_processes(len(rows))
    print(f"decoding {len(rows)} images from {data.folder}{f' in {processes} processes' * (processes > 1)} "
          "(cached for later runs)")
    with interruptible(f"decoding the images of {data.folder}: they stay as they are, and nothing decoded is "
                       "cached yet; run the same command again to decode them"):
        data.images[rows], data.readable[rows], repairs = read_rgb32_all([f"{data.folder}/{data.names[row]}"
                                                                           for row in rows.tolist()])
        warn_of(repairs)
        training = np.flatnonzero(~data.is_test & data.readable)
        data.train_stats = channel_stats(data.nchw(training)) if len(training) else None
        save(cache, data.images, names=np.array(data.names), stamps=stamps, readable=data.readable,
             train_stats=np.array(data.train_stats or np.zeros(0)))


def file_stamps(folder, names):
    """Each file's (size, modification time in ns): what tells the cache that a file changed."""
    stats = (os.stat(f"{folder}/{name}") for name in names)
    return np.array([(stat.st_size, stat.st_mtime_ns) for stat in stats], dtype=np.int64).reshape(-1, 2)


def cached_stamps(cache, names):
    """The stamps `cache` holds for the files `names`, or None unless it holds exactly those."""
    try:
        with np.load(cache) as saved:
            return saved["stamps"] if saved["names"].tolist() == names else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # none, or damaged: cached() decodes
        return None


def cached(cache, names, stamps):
    """(pixels, readable, channel statistics of the training images, fresh) from `cache`: fresh
    says which files it holds unchanged; the statistics are None unless it holds all of them."""
    images = np.zeros((len(names), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    readable, fresh = np.ones(len(names), dtype=bool), np.zeros(len(names), dtype=bool)
    try:
        with np.load(cache) as saved:
            saved_names, saved_stamps = saved["names"], saved["stamps"]
            # Mapped rather than read: a run reads the pages it touches (a --subset run, a fifth of
            # them) from the page cache, never a copy of all 184 MB (about half a second on 2 cores).
            pixels = np.load(cache.with_name(str(saved["pixels"])), mmap_mode="r")
            if np.array_equal(saved_names, names) and np.array_equal(saved_stamps, stamps):
                train_stats = tuple(saved["train_stats"].tolist()) or None
                return pixels, saved["readable"], train_stats, ~fresh
            row = {name: i for i, name in enumerate(saved_names.tolist())}
            rows = np.array([row.get(name, -1) for name in names.tolist()], dtype=np.int64)
            fresh = (rows >= 0) & (saved_stamps[rows] == stamps).all(1)
            images[fresh], readable[fresh] = pixels[rows[fresh]], saved["readable"][rows[fresh]]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile):  # damaged: decoded again
        fresh[:] = False
    return images, readable, None, fresh


def save(cache, images, **index):
    """The pixels as a .npy file of a new name, whole or not at all, then the `index` (.npz) that
    names it; the pixels of earlier cache files go once it names the new ones (a run that mapped
    them keeps its mapping). A disk that is full or will not be written costs the next run a
    decode, not this one: a warning says so."""
    pixels = cache.with_name(f"{cache.stem}-{secrets.token_hex(4)}.npy")

    def write(tmp, array_writer, **arrays):
        with open(tmp, "wb") as f:
            array_writer(f, **arrays)

    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned(cache.parent)
        write_atomically(pixels, lambda tmp: write(tmp, np.save, arr=images))
        write_atomically(cache, lambda tmp: write(tmp, np.savez, pixels=pixels.name, **index))
        for earlier in cache.parent.glob(f"{cache.stem}-*.npy"):
            if earlier != pixels:
                earlier.unlink(missing_ok=True)
    except OSError as e:
        problem = cache_problem(e, cache.parent)
        if problem is None:
            raise
        warn(f"the decoded images are not cached, so the next run decodes them again: {problem}")


def channel_stats(images):
    """Per-channel mean and std in [0, 1] of uint8 (N, 3, H, W) images, exactly, from each
    channel's histogram of the 256 pixel values (no float copy of the data set)."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in images.unbind(1):
        counts = torch.bincount(channel.flatten(), minlength=256).double()
        mean = (counts * values).sum() / counts.sum()
        var = (counts * (values - mean) ** 2).sum() / (counts.sum() - 1)
        means.append(mean.item())
        stds.append(var.sqrt().item())
    return means, stds


def warn_of(repairs):
    """One warning for each kind of repair (a conversion to RGB, a resize), counted, with examples."""
    for kind, what in (("mode", "converted to RGB"), ("size", "resized to 32x32")):
        changes = [change for change in repairs if change.split()[0] == kind]
        if changes:
            warn(f"{len(changes)} images {what} (such as {sorted(set(changes))[:3]})")


# ---------------------------------------------------------------------------------------------
# The listing, and the layout's checks.

def list_folder(folder):
    """(classes, the image files' names relative to `folder`, the number in each split's class
    folders), from one listing of the class folders, the layout checked on the way."""
    classes = check_classes(folder)
    names, counts, others, subfolders = [], [], [], []
    for split in SPLITS:
        for name in classes:
            images, other_files, folders = class_folder_contents(folder / split / name)
            if not images:
                raise DataError(f"{folder / split / name} has no image files directly in it (subfolders are not "
                                "read): add images or remove the folder from train/ and test/")
            names += [f"{split}/{name}/{image}" for image in sorted(images)]
            counts.append(len(images))
            others += other_files
            subfolders += folders
    if others:
        warn(f"ignoring {len(others)} files in {folder} that are not images (such as {others[0]})")
    if subfolders:
        warn(f"ignoring {len(subfolders)} folders inside class folders of {folder} (such as {subfolders[0]}): "
             "images are read only directly in train/<class>/ and test/<class>/; move them there to use them")
    return classes, names, counts


def class_folder_contents(class_folder):
    """(image file names, other files' paths, subfolders' paths) directly in a class folder,
    hidden names left out."""
    images, others, subfolders = [], [], []
    with os.scandir(class_folder) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                is_folder, is_file = entry.is_dir(), entry.is_file()
            except OSError:  # a link to itself: neither
                is_folder = is_file = False
            if is_folder:
                subfolders.append(entry.path)
            elif is_file and has_image_extension(entry.name):
                images.append(entry.name)
            else:
                others.append(entry.path)
    return images, others, subfolders
