"""CIFAR-10 from whatever the user has, through one fastai DataBlock.

Sources, in the order they are looked for:
- `--data PATH` or the environment variable CIFAR10_DATA: a folder or a .tgz in fastai's
  URLs.CIFAR layout (train/<class>/*, test/<class>/*, any image format), or the official python
  version (the cifar-10-batches-py/ folder or cifar-10-python.tar.gz);
- otherwise fastai's `untar_data(URLs.CIFAR)` download.
Archives are unpacked (archives.py), and python batches written out as PNG files in that layout,
once, into the cache folder (cache.py: CIFAR10_CACHE, default ~/.cache/cifar10-fast, also when
empty). The folder is then listed and decoded once (decoded_folder.py), for a run or for every
run of a group, and each run gets fastai DataLoaders over it through one DataBlock.

The validation set is the official 10,000-image test split. Images are normalised with the
channel statistics of the training images in use.
"""
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.external import URLs, fastai_path, untar_data
from fastai.data.transforms import Normalize, parent_label
from fastai.vision.core import PILImage
from fastai.vision.data import ImageBlock
from fasttransform import Transform
from PIL import Image

from archives import unpack
from augment import AlbumentationsTransform, albumentations_pipeline, gpu_augmentations
from cache import CONVERTED, build_once, cache_root, entry_name
from decoded_folder import SPLITS, DecodedFolder, decoded_folder
from device_loader import DeviceDataLoader, valid_batch_size
from errors import DataError
from images import squashed
from python_batches import PYTHON_BATCHES, python_class_names, read_python_batch

DOWNLOAD_TIMEOUT_S = 30
REACH_TIMEOUT_S = 3


# ---------------------------------------------------------------------------------------------
# Sources: turn whatever the user has into a folder in fastai's layout.

def cifar10_data(data=None):
    """CIFAR-10 from `data`, CIFAR10_DATA or the download, listed and decoded: what a run, or every
    run of a group, sets up once."""
    return decoded_folder(cifar10_folder(data))


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
    elif not path.is_dir():
        raise DataError(f"{path} is neither a folder nor a regular file (a device, a pipe or a socket): point --data "
                        "or CIFAR10_DATA at a CIFAR-10 folder or .tgz")
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


def layout_folder(path):
    """Find fastai's layout in `path`, in the one folder an archive usually wraps it in, or make
    it from the python batches. Its listing checks it (a converted one too: damaged batches can
    still make a folder that trains nothing useful, such as one with a single class)."""
    for candidate in [path, *sorted(p for p in path.iterdir() if p.is_dir())]:
        if all((candidate / split).is_dir() for split in SPLITS):
            return candidate
        if all((candidate / name).is_file() for name in PYTHON_BATCHES):
            return python_batches_to_folder(candidate)
    raise DataError(f"{path} holds neither train/ and test/ class folders nor the python batches "
                    f"({', '.join(PYTHON_BATCHES)}): point --data at a CIFAR-10 copy")


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

    return build_once(cache_root() / CONVERTED / entry_name(batches / "test_batch"), write,
                      f"writing out the python batches in {batches}")


# ---------------------------------------------------------------------------------------------
# The DataBlock.

def cifar10_block(classes, items, n_train, item_tfms=()):
    """ImageBlock and CategoryBlock over `items` (the training images, then the test images: the
    folder's listing, never a second one), split by that order, labelled by the parent folder.
    Squash makes any other size 32x32 in the exported learner."""
    return DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=classes)),
                     get_items=lambda folder: items,
                     splitter=lambda items: (list(range(n_train)), list(range(n_train, len(items)))),
                     get_y=parent_label,
                     item_tfms=[Squash(), *item_tfms])


class Squash(Transform):
    """An image of any size squashed to 32x32, as the decoded pixels and predict.py are
    (images.squashed): fastai's Resize with ResizeMethod.Squish, without fastai.vision.augment,
    which loads torchvision and through it torch._dynamo (2 s of every run's start-up)."""
    order = 1  # Resize's: after PILImage.create, before ToTensor

    def encodes(self, image: PILImage):
        return squashed(image)


def normalisation_stats(data, train):
    """The channel statistics of the training images in use, refused where a channel's std is 0:
    Normalize divides by it, and the first batch's loss would be nan, reported as a divergence."""
    means, stds = data.channel_stats(train)
    constant = [colour for colour, std in zip(("red", "green", "blue"), stds) if std == 0]
    if constant:
        raise DataError(f"the {len(train)} training images in use have std 0 in the {', '.join(constant)} "
                        f"channel{'s' * (len(constant) > 1)} (every pixel the same), which normalising divides by: "
                        "train on more, or more varied, images (a larger --subset)")
    return means, stds


def cifar10_dataloaders(data, bs=512, aug="gpu", device=None, subset=None, workers=None, seed=None):
    """fastai DataLoaders over `data`, a DecodedFolder (which a group's runs share) or a folder;
    returns (dls, stats) with stats = (mean, std)."""
    data = data if isinstance(data, DecodedFolder) else decoded_folder(data)
    train, test = data.rows(subset)
    block = cifar10_block(data.classes, data.paths(np.concatenate([train, test]).tolist()), len(train))
    dsets = block.datasets(data.folder)
    stats = normalisation_stats(data, train)
    batch_tfms = [*block.batch_tfms, Normalize.from_stats(*stats)]
    val_bs = valid_batch_size(len(test), bs)
    if aug == "gpu":  # the images as NCHW views of NHWC memory: the channels-last layout a GPU convolves fastest
        splits_kwargs = [dict(images=data.nchw(rows), labels=torch.from_numpy(data.labels[rows]))
                         for rows in (train, test)]
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
