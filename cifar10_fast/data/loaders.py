"""A run's way into the data layer: CIFAR-10 set up once (found, listed and decoded), then fastai
DataLoaders over it through one DataBlock, on the device or per image on CPU workers.

The validation set is the official 10,000-image test split. Images are normalised with the
channel statistics of the training images in use.
"""
import os
from pathlib import Path

import numpy as np
import torch
from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.transforms import Normalize, parent_label
from fastai.vision.core import PILImage
from fastai.vision.data import ImageBlock
from fasttransform import Transform
from PIL import Image

from cifar10_fast.core.errors import DataError
from cifar10_fast.data.decoded_folder import DecodedFolder, decoded_folder
from cifar10_fast.data.device_loader import DeviceDataLoader, valid_batch_size
from cifar10_fast.data.images import open_rgb, squashed
from cifar10_fast.data.sources import cifar10_folder


def cifar10_data(data=None):
    """CIFAR-10 from `data`, CIFAR10_DATA or the download, listed and decoded: what a run, or every
    run of a group, sets up once."""
    return decoded_folder(cifar10_folder(data))


def cifar10_block(classes, items, n_train, item_tfms=()):
    """ImageBlock and CategoryBlock over `items` (the training images, then the test images: the
    folder's listing, never a second one), split by that order, labelled by the parent folder.
    Squash makes any other size 32x32 in the exported learner."""
    return DataBlock(blocks=(ImageBlock(RGBImage), CategoryBlock(vocab=classes)),
                     get_items=lambda folder: items,
                     splitter=lambda items: (list(range(n_train)), list(range(n_train, len(items)))),
                     get_y=parent_label,
                     item_tfms=[Squash(), *item_tfms])


class RGBImage(PILImage):
    """fastai's PILImage of a file, opened as the decoded pixels are (images.open_rgb: an integer
    image of 16 or 32 bits keeps its top 8), so that the exported learner and the per-image path
    read a file as the cache and predict.py do."""

    @classmethod
    def create(cls, fn: Path | str | torch.Tensor | np.ndarray | bytes | Image.Image, **kwargs):
        # Annotated as PILImage.create is: fastai's TfmdLists takes the pipeline's input types from
        # it, and learn.predict refuses a str that they do not name.
        if isinstance(fn, (str, os.PathLike)):
            return cls(open_rgb(fn)[0])
        return super().create(fn, **kwargs)


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


def cifar10_dataloaders(data, bs=512, device=None, subset=None, workers=None, seed=None, on_device=True,
                        augmentations=None, holdout=None):
    """fastai DataLoaders over `data`, a DecodedFolder (which a group's runs share) or a folder;
    returns (dls, stats) with stats = (mean, std). `on_device`: the images held on the device and
    served by DeviceDataLoader; else read per image by fastai's loader on `workers` CPU processes.
    `augmentations(mean)` gives the training augmentation for that path (augment.py): batch
    transforms after Normalize on the device, item transforms on uint8 images per image. With a
    `holdout` (a search's trial), the validation set is that many training images held out."""
    data = data if isinstance(data, DecodedFolder) else decoded_folder(data)
    train, test = data.rows(subset, holdout)  # with a holdout, its training images are the test set
    block = cifar10_block(data.classes, data.paths(np.concatenate([train, test]).tolist()), len(train))
    dsets = block.datasets(data.folder)
    stats = normalisation_stats(data, train)
    augmentation = augmentations(stats[0]) if augmentations else []
    batch_tfms = [*block.batch_tfms, Normalize.from_stats(*stats)]
    val_bs = valid_batch_size(len(test), bs)
    if on_device:  # the images as NCHW views of NHWC memory: the channels-last layout a GPU convolves fastest
        splits_kwargs = [dict(images=data.nchw(rows), labels=torch.from_numpy(data.labels[rows]))
                         for rows in (train, test)]
        dls = dsets.dataloaders(bs=bs, val_bs=val_bs, device=device, seed=seed, dl_type=DeviceDataLoader,
                                dl_kwargs=splits_kwargs, after_item=block.item_tfms,
                                after_batch=[*batch_tfms, *augmentation])
    else:
        dls = dsets.dataloaders(bs=bs, val_bs=val_bs, device=device, num_workers=workers,
                                after_item=[*block.item_tfms, *augmentation], after_batch=batch_tfms)
    return dls, stats
