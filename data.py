"""CIFAR-10 from whatever the user has, through one fastai DataBlock.

Sources, in the order they are looked for:
- `--data PATH` or the environment variable CIFAR10_DATA: a folder or a .tgz in fastai's
  URLs.CIFAR layout (train/<class>/*, test/<class>/*, any image format), or the official python
  version (the cifar-10-batches-py/ folder or cifar-10-python.tar.gz);
- otherwise fastai's `untar_data(URLs.CIFAR)` download.
Archives are unpacked, and python batches written out as PNG files in that layout, once, into
the cache folder (CIFAR10_CACHE, default ~/.cache/cifar10-fast, also when empty). The decoded
uint8 pixels are cached there too, so the next run starts in seconds.

The validation set is the official 10,000-image test split. Images are normalised with the
channel statistics of the training images in use.
"""
import hashlib
import os
import shutil
import socket
import tarfile
import tempfile
import threading
from functools import partial
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.external import URLs, fastai_path, untar_data
from fastai.data.transforms import FuncSplitter, Normalize, parent_label
from fastai.vision.augment import Resize, ResizeMethod
from fastai.vision.data import ImageBlock
from PIL import Image

from augment import AlbumentationsTransform, albumentations_pipeline, gpu_augmentations
from device_loader import DeviceDataLoader, valid_batch_size
from errors import DataError, warn
from images import IMAGE_SIZE, UnreadableImage, has_image_extension, read_rgb32
from python_batches import PYTHON_BATCHES, python_class_names, read_python_batch

CIFAR10_CLASSES = 10
SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_S = 30
REACH_TIMEOUT_S = 3


def cache_root():
    # An empty CIFAR10_CACHE is unset, as an empty CIFAR10_DATA is: not the current folder.
    return Path(os.environ.get("CIFAR10_CACHE") or Path.home() / ".cache" / "cifar10-fast").expanduser()


# ---------------------------------------------------------------------------------------------
# Sources: turn whatever the user has into a folder in fastai's layout.

def cifar10_folder(data=None):
    """The folder (train/<class>/*, test/<class>/*) for `data`, CIFAR10_DATA or the download."""
    data = data or os.environ.get("CIFAR10_DATA")
    if not data:
        return download()
    path = Path(data).expanduser().absolute()
    if not path.exists():
        raise DataError(f"{path} does not exist: point --data or CIFAR10_DATA at a CIFAR-10 folder or .tgz")
    if path.is_file():
        path = unpack(path)
    return layout_folder(path)


def reachable(url, timeout=REACH_TIMEOUT_S):
    """Whether `url`'s host takes a connection within `timeout` seconds, the name lookup included
    (which has no timeout of its own, hence the thread)."""
    address = urlparse(url)
    connected = []

    def connect():
        try:
            socket.create_connection((address.hostname, address.port or 443), timeout=timeout).close()
            connected.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(connected)


def download():
    already_here = (fastai_path("data") / Path(urlparse(URLs.CIFAR).path).stem).exists()  # untar_data's folder
    if not already_here and not reachable(URLs.CIFAR):
        raise DataError(f"no CIFAR-10 here and {urlparse(URLs.CIFAR).hostname} cannot be reached: pass --data PATH "
                        "or set CIFAR10_DATA to a local copy (a CIFAR-10 folder or .tgz)")
    # fastai's download has no timeout of its own: without one, a machine with no route out hangs.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return layout_folder(untar_data(URLs.CIFAR))
    except Exception as e:
        raise DataError(f"could not download CIFAR-10 ({type(e).__name__}: {e}); "
                        "pass --data PATH or set CIFAR10_DATA to a local copy") from None
    finally:
        socket.setdefaulttimeout(previous)


def source_key(path):
    """Names a cache entry after the source's path, size and modification time."""
    stat = path.stat()
    text = f"{path.absolute()}:{stat.st_size}:{stat.st_mtime_ns}"
    return f"{path.name.split('.')[0]}-{hashlib.sha1(text.encode()).hexdigest()[:12]}"


def build_once(target, build):
    """Run `build(tmp_dir)` and move the result to `target`, so that an interrupted build never
    leaves a half-written cache entry behind."""
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        build(tmp)
        try:
            tmp.rename(target)
        except OSError:
            if not target.exists():
                raise
            # Another process (two runs started together) built the same entry first: use theirs.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def refuse_unsafe_members(member, dest_path):
    """tarfile's "data" filter, which refuses members that would land outside the folder (through
    `..`, a link or a device file), and also absolute names, which it would unpack inside the
    folder with the leading / dropped: tar drops it when it makes an archive unless told not to
    (-P), so an archive that keeps it was made to write elsewhere."""
    if member.name.startswith("/"):
        raise tarfile.AbsolutePathError(member)
    return tarfile.data_filter(member, dest_path)


def damaged_archive(archive, error):
    return DataError(f"{archive} is damaged ({error}): download it again")


def unpack(archive):
    try:
        is_archive = tarfile.is_tarfile(archive)
    except EOFError as e:  # a .tgz cut off before the end of tar's first header
        raise damaged_archive(archive, e) from e
    if not is_archive:
        raise DataError(f"{archive} is not a folder or a .tgz/.tar.gz archive: point --data at one of those")

    def extract(tmp):
        print(f"unpacking {archive} into the cache (once)")
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(tmp, filter=refuse_unsafe_members)
        except tarfile.FilterError as e:
            raise DataError(f"{archive} is refused as unsafe ({e}): unpack only a CIFAR-10 archive you trust, "
                            "or download it again") from e
        except (tarfile.TarError, EOFError, OSError) as e:
            raise damaged_archive(archive, e) from e

    return build_once(cache_root() / "unpacked" / source_key(archive), extract)


def layout_folder(path):
    """Find fastai's layout in `path`, in the one folder an archive usually wraps it in, or make
    it from the python batches; either way it is checked (a converted one too: damaged batches
    can still make a folder that trains nothing useful, such as one with a single class)."""
    for candidate in [path, *sorted(p for p in path.iterdir() if p.is_dir())]:
        if all((candidate / split).is_dir() for split in SPLITS):
            folder = candidate
        elif all((candidate / name).is_file() for name in PYTHON_BATCHES):
            folder = python_batches_to_folder(candidate)
        else:
            continue
        check_layout(folder)
        return folder
    raise DataError(f"{path} holds neither train/ and test/ class folders nor the python batches "
                    f"({', '.join(PYTHON_BATCHES)}): point --data at a CIFAR-10 copy")


def class_names(folder, split="train"):
    return sorted(p.name for p in (folder / split).iterdir() if p.is_dir() and not p.name.startswith("."))


def class_folder_contents(class_folder):
    """(image files, other files, subfolders) directly in a class folder, hidden names left out.
    Images lie directly in train/<class>/ and test/<class>/: subfolders are not read, so a copy
    kept in one, or a link that loops back up the tree, never enters the data twice."""
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
                images.append(entry.path)
            else:
                others.append(entry.path)
    return images, others, subfolders


def check_layout(folder):
    classes = class_names(folder)
    if len(classes) < 2:
        raise DataError(f"{folder / 'train'} has {len(classes)} class folders: expected train/<class>/<image> "
                        f"files for the {CIFAR10_CLASSES} CIFAR-10 classes")
    test_classes = class_names(folder, "test")
    if test_classes != classes:
        raise DataError(f"{folder}: train/ and test/ have different class folders "
                        f"({', '.join(classes)} vs {', '.join(test_classes)}): give both the same classes")
    if len(classes) != CIFAR10_CLASSES:
        warn(f"{folder / 'train'} has {len(classes)} class folders, not CIFAR-10's {CIFAR10_CLASSES}: "
             f"training a {len(classes)}-class model")
    others, subfolders = [], []  # one listing of the 60,000 files: this runs at every start
    for split in SPLITS:
        for name in classes:
            images, other_files, folders = class_folder_contents(folder / split / name)
            if not images:
                raise DataError(f"{folder / split / name} has no image files directly in it (subfolders are not "
                                "read): add images or remove the folder from train/ and test/")
            others += other_files
            subfolders += folders
    if others:
        warn(f"ignoring {len(others)} files in {folder} that are not images (such as {others[0]})")
    if subfolders:
        warn(f"ignoring {len(subfolders)} folders inside class folders of {folder} (such as {subfolders[0]}): "
             "images are read only directly in train/<class>/ and test/<class>/; move them there to use them")


def python_batches_to_folder(batches):
    """Write the official python version out in fastai's layout (PNG is lossless)."""
    classes = python_class_names(batches)

    def write(tmp):
        print(f"writing the python batches in {batches} out as PNG files in the cache (once)")
        for split in SPLITS:
            for name in classes:
                (tmp / split / name).mkdir(parents=True)
        for name in PYTHON_BATCHES:
            split = "test" if name == "test_batch" else "train"
            images, labels = read_python_batch(batches / name, len(classes))
            for i, (image, label) in enumerate(zip(images, labels)):
                Image.fromarray(image).save(tmp / split / classes[label] / f"{name}-{i:05d}.png")

    return build_once(cache_root() / "converted" / source_key(batches / "test_batch"), write)


# ---------------------------------------------------------------------------------------------
# The DataBlock.

def cifar10_items(folder, subset=None, skip=frozenset()):
    """Training images, class-interleaved (so the first N hold every class), then test images;
    none of `skip`."""
    train = split_images(folder, "train")
    rank_in_class, seen = [], {}
    for path in train:
        seen[path.parent.name] = seen.get(path.parent.name, -1) + 1
        rank_in_class.append(seen[path.parent.name])
    train = [train[i] for i in np.argsort(rank_in_class, kind="stable")]
    return [p for p in train[:subset] + split_images(folder, "test") if p not in skip]


def split_images(folder, split):
    """The image files of train/ or test/, sorted: those directly in its class folders."""
    return sorted(map(Path, image_files(folder, split)))


def image_files(folder, split):
    """The paths, as strings, of the image files directly in the class folders of train/ or test/:
    all the loader reads."""
    return [path for name in class_names(folder, split) for path in class_folder_contents(folder / split / name)[0]]


def in_test_folder(path):
    # GrandparentSplitter does the same but parses each path again: seconds at 60k images.
    return path.parent.parent.name == "test"


def cifar10_block(classes, subset=None, item_tfms=(), skip=frozenset()):
    """ImageBlock and CategoryBlock, split by the train/ and test/ folders, labelled by the parent
    folder. Resize squashes any other size to 32x32 in the exported learner, as the decoded pixels
    and predict.py do (images.read_rgb32); fastai's default would crop."""
    return DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=classes)),
                     get_items=partial(cifar10_items, subset=subset, skip=skip),
                     splitter=FuncSplitter(in_test_folder),
                     get_y=parent_label,
                     item_tfms=[Resize(IMAGE_SIZE, method=ResizeMethod.Squish), *item_tfms])


def decode(paths):
    """uint8 (N, 32, 32, 3) pixels of `paths`, zeros where a file cannot be read, and which could.
    Conversions are counted and reported once, when the pixels are decoded for the cache."""
    images = np.zeros((len(paths), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    readable = np.ones(len(paths), dtype=bool)
    repairs = {}
    for i, path in enumerate(paths):
        try:
            images[i], changes = read_rgb32(path)
        except UnreadableImage:
            readable[i] = False
            continue
        for change in changes:
            repairs.setdefault(change.split()[0], []).append(change)
    for kind, changes in repairs.items():
        what = "converted to RGB" if kind == "mode" else "resized to 32x32"
        warn(f"{len(changes)} images {what} (such as {sorted(set(changes))[:3]})")
    return images, readable


def file_stamps(paths):
    return np.array([(s.st_size, s.st_mtime_ns) for s in map(os.stat, paths)], dtype=np.int64)


def decoded_images(folder, paths):
    """uint8 (N, 3, 32, 32) pixels of `paths` and which of them could be read, decoded once per
    folder and cached by file name, size and modification time."""
    cache = cache_root() / "decoded" / f"{source_key(folder)}.npz"
    names = [str(p)[len(str(folder)) + 1:] for p in paths]  # relative_to() is slow at 60k
    stamps = file_stamps(paths)
    if cache.exists():
        with np.load(cache) as cached:
            row = {name: i for i, name in enumerate(cached["names"])}
            rows = [row.get(name, -1) for name in names]
            if -1 not in rows and "readable" in cached and np.array_equal(cached["stamps"][rows], stamps):
                return torch.from_numpy(cached["images"][rows]).permute(0, 3, 1, 2), cached["readable"][rows]
    print(f"decoding {len(paths)} images from {folder} (cached for later runs)")
    images, readable = decode(paths)
    cache.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cache.parent, suffix=".npz", delete=False) as f:
        np.savez(f, names=np.array(names), stamps=stamps, images=images, readable=readable)
    os.replace(f.name, cache)
    return torch.from_numpy(images).permute(0, 3, 1, 2), readable


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


def normalisation_stats(train_images):
    """channel_stats of the training images, refused where a channel's std is 0: Normalize divides
    by it, and the first batch's loss would be nan, reported as a divergence."""
    means, stds = channel_stats(train_images)
    constant = [colour for colour, std in zip(("red", "green", "blue"), stds) if std == 0]
    if constant:
        raise DataError(f"the {len(train_images)} training images in use have std 0 in the {', '.join(constant)} "
                        f"channel{'s' * (len(constant) > 1)} (every pixel the same), which normalising divides by: "
                        "train on more, or more varied, images (a larger --subset)")
    return means, stds


def skip_unreadable(folder, dsets, readable, classes, subset):
    """A corrupt training image is left out and counted; the test set must stay whole."""
    unreadable = [p for p, ok in zip(dsets.items, readable) if not ok]
    for path in filter(in_test_folder, unreadable):
        try:
            read_rgb32(path)
        except UnreadableImage as e:
            raise DataError(str(e)) from e  # train_fastai.py reports a DataError in one line
    warn(f"skipped {len(unreadable)} unreadable training images (such as {unreadable[0]}): "
         "remove or replace them to silence this")
    block = cifar10_block(classes, subset, skip=frozenset(unreadable))
    return block, block.datasets(folder)


def cifar10_dataloaders(folder, bs=512, aug="gpu", device=None, subset=None, workers=None, seed=None):
    """fastai DataLoaders over the folder; returns (dls, stats) with stats = (mean, std)."""
    classes = class_names(folder)
    block = cifar10_block(classes, subset)
    dsets = block.datasets(folder)
    images, readable = decoded_images(folder, dsets.items)
    if not readable.all():
        block, dsets = skip_unreadable(folder, dsets, readable, classes, subset)
        images = images[torch.from_numpy(readable)]
    train_idx, test_idx = dsets.splits
    stats = normalisation_stats(images[train_idx])
    batch_tfms = [*block.batch_tfms, Normalize.from_stats(*stats)]
    val_bs = valid_batch_size(len(test_idx), bs)
    if aug == "gpu":
        labels = torch.tensor([classes.index(p.parent.name) for p in dsets.items])
        splits_kwargs = [dict(images=images[idx], labels=labels[idx]) for idx in (train_idx, test_idx)]
        dls = dsets.dataloaders(bs=bs, val_bs=val_bs, device=device, seed=seed, dl_type=DeviceDataLoader,
                                dl_kwargs=splits_kwargs, after_item=block.item_tfms,
                                after_batch=[*batch_tfms, *gpu_augmentations()])
    elif aug == "albumentations":
        augmentations = AlbumentationsTransform(albumentations_pipeline(stats[0], seed))
        dls = dsets.dataloaders(bs=bs, val_bs=val_bs, device=device, num_workers=workers,
                                after_item=[*block.item_tfms, augmentations], after_batch=batch_tfms)
    else:
        raise ValueError(f"unknown augmentation backend {aug!r}")
    return dls, stats
