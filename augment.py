"""The recipe's training augmentation: pad 4 and random 32x32 crop, horizontal flip, Cutout 8x8.

Two implementations of the same three steps:
- GPU batch transforms (the default): fastai batch transforms that act on a whole normalised
  batch at once on its device, so the hot loop does no per-image work on the CPU.
- An albumentations pipeline for the per-image path (`--aug albumentations`), the way the seed
  notebooks ran it: uint8 images on CPU DataLoader workers.

Both are training-only (`split_idx = 0`): fastai never applies them to the validation set.
The GPU transforms run after `Normalize`, so Cutout fills with 0, which is the data set mean;
the per-image path works on uint8 pixels before normalisation and fills with the mean pixel.
"""
import os
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from fastai.torch_core import TensorImage
from fastai.vision.core import PILImage
from fasttransform import Transform

PAD = 4
CUTOUT_SIZE = 8


@cache
def arange(n, device):
    """`torch.arange(n)` on `device`, made once: every batch of a shape indexes with the same ranges."""
    return torch.arange(n, device=device)


def plain(x):
    """`x` as a plain tensor. fastai's TensorImage runs its `__torch_function__` (Python, on the
    host) around every operation; the transforms compute on the plain tensor, and fastai's
    Transform casts what `encodes` returns back to the input's type (`retain_type`), so decodes
    and show_batch still see a TensorImage."""
    return x.as_subclass(torch.Tensor)


class PadCrop(Transform):
    """Pad by `pad` pixels and cut a random window of the original size: every image is shifted
    by its own uniform offset in [-pad, pad] on each axis."""
    split_idx, order = 0, 100  # training only; after Normalize (99)

    def __init__(self, pad=PAD, mode="reflect"):
        super().__init__()
        self.pad, self.mode = pad, mode

    def encodes(self, x: TensorImage):
        x = plain(x)
        n, c, h, w = x.shape
        padded = F.pad(x, (self.pad,) * 4, mode=self.mode)
        top, left = torch.randint(0, 2 * self.pad + 1, (2, n, 1), device=x.device)
        rows = (top + arange(h, x.device))[:, None, :, None]
        cols = (left + arange(w, x.device))[:, None, None, :]
        batch = arange(n, x.device)[:, None, None, None]
        channel = arange(c, x.device)[None, :, None, None]
        # One gather for the whole batch instead of a slice per image.
        return padded[batch, channel, rows, cols]


class FlipLR(Transform):
    """Mirror each image left-right with probability `p`, chosen per image."""
    split_idx, order = 0, 101

    def __init__(self, p=0.5):
        super().__init__()
        self.p = p

    def encodes(self, x: TensorImage):
        x = plain(x)
        flip = torch.rand(x.shape[0], device=x.device) < self.p
        return torch.where(flip[:, None, None, None], x.flip(3), x)


class Cutout(Transform):
    """Fill one `size` x `size` square per image with `fill`; the square lies wholly inside the
    image at a uniform position (DeVries & Taylor 2017, as in Myrtle's DAWNBench recipe).
    `fill=0` after Normalize is the data set mean."""
    split_idx, order = 0, 102

    def __init__(self, size=CUTOUT_SIZE, fill=0.0, p=1.0):
        super().__init__()
        self.size, self.fill, self.p = size, fill, p

    def encodes(self, x: TensorImage):
        x = plain(x)
        n, _, h, w = x.shape
        top = torch.randint(0, h - self.size + 1, (n, 1), device=x.device)
        left = torch.randint(0, w - self.size + 1, (n, 1), device=x.device)
        rows, cols = arange(h, x.device), arange(w, x.device)
        in_rows = (rows >= top) & (rows < top + self.size)
        in_cols = (cols >= left) & (cols < left + self.size)
        square = in_rows[:, :, None] & in_cols[:, None, :]
        square &= (torch.rand(n, device=x.device) < self.p)[:, None, None]
        return x.masked_fill(square[:, None], self.fill)


def gpu_augmentations(pad_mode="reflect"):
    """The recipe's transform list, for `batch_tfms` after Normalize."""
    return [PadCrop(PAD, pad_mode), FlipLR(), Cutout(CUTOUT_SIZE)]


def training_augmentations(backend, seed=None):
    """The recipe's augmentation on `backend` ("gpu" or "albumentations") as the data layer takes it:
    a function of the training images' mean (which the per-image Cutout fills with) that gives the
    GPU batch transforms or the per-image item transform."""
    if backend == "gpu":
        return lambda mean: gpu_augmentations()
    if backend == "albumentations":
        return lambda mean: [AlbumentationsTransform(albumentations_pipeline(mean, seed))]
    raise ValueError(f"unknown augmentation backend {backend!r}")


def albumentations_pipeline(mean, seed=None):
    """The same three steps per uint8 HWC image; `mean` (RGB in [0, 1]) is Cutout's fill."""
    # A second to load: only the per-image path does. It asks PyPI for a newer version when it is
    # imported, its name lookup without a timeout: on a machine without network (a GPU node, CI)
    # every process could stall there.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A
    import cv2
    fill = tuple(int(round(255 * m)) for m in mean)
    return A.Compose([
        # BORDER_REFLECT_101 mirrors without repeating the edge pixel, like torch's "reflect".
        A.PadIfNeeded(min_height=32 + 2 * PAD, min_width=32 + 2 * PAD, border_mode=cv2.BORDER_REFLECT_101),
        A.RandomCrop(32, 32),
        A.HorizontalFlip(p=0.5),
        A.CoarseDropout(num_holes_range=(1, 1), hole_height_range=(CUTOUT_SIZE, CUTOUT_SIZE),
                        hole_width_range=(CUTOUT_SIZE, CUTOUT_SIZE), fill=fill, p=1.0),
    ], seed=seed)


class AlbumentationsTransform(Transform):
    """fastai item transform around an albumentations pipeline, training images only."""
    split_idx, order = 0, 2  # after data.Squash (1), before ToTensor (5)

    def __init__(self, pipeline):
        super().__init__()
        self.pipeline = pipeline
        self.seeded_for = None

    def encodes(self, img: PILImage):
        # albumentations keeps its own random state, which every DataLoader worker inherits
        # as an identical copy: reseed from torch's per-worker seed so that workers differ
        # and a run with a fixed --seed repeats.
        if self.seeded_for != torch.initial_seed():
            self.seeded_for = torch.initial_seed()
            self.pipeline.set_random_seed(self.seeded_for % 2**32)
        return PILImage.create(self.pipeline(image=np.asarray(img))["image"])
