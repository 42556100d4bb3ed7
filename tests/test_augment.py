"""Each augmentation step checked on its own, with one checker per property for both backends."""
import os
import subprocess
import sys

import albumentations as A
import numpy as np
import pytest
import torch
from fastai.torch_core import TensorBase
from fastai.vision.all import PILImage, Pipeline, TensorImage

from augment import (
    CUTOUT_SIZE,
    PAD,
    AlbumentationsTransform,
    Cutout,
    FlipLR,
    PadCrop,
    albumentations_pipeline,
    gpu_augmentations,
)
from tests.conftest import REPO

N = 64
MEAN = (0.5, 0.25, 0.75)
FILL = tuple(round(255 * m) for m in MEAN)


def random_images(n=N):
    """uint8 HWC images with no pixel equal to the Cutout fill, so filled pixels can be counted."""
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    for c, fill in enumerate(FILL):
        images[..., c][images[..., c] == fill] = (fill + 1) % 256
    return images


def window_offset(out, image):
    """(top, left) of the window of the reflect-padded image that `out` is, or None."""
    padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="reflect")  # = torch/cv2 REFLECT_101
    for top in range(2 * PAD + 1):
        for left in range(2 * PAD + 1):
            if np.array_equal(padded[top:top + 32, left:left + 32], out):
                return top, left
    return None


def is_mirror(out, image):
    return np.array_equal(out, image[:, ::-1])


def filled_square(out, image, fill):
    """The changed pixels must be exactly one 8x8 square inside the image, set to `fill` in every
    channel; returns its top-left corner."""
    changed = (out != image).all(axis=2)
    for c in range(3):
        assert (out[..., c] == fill[c]).sum() == CUTOUT_SIZE ** 2
        assert np.array_equal(out[..., c] == fill[c], changed)
    rows, cols = np.nonzero(changed)
    assert rows.max() - rows.min() == cols.max() - cols.min() == CUTOUT_SIZE - 1
    assert np.array_equal(out[~changed], image[~changed])
    return rows.min(), cols.min()


def gpu_step(step, images):
    """Apply one GPU transform to a batch, as fastai does on the training set."""
    batch = TensorImage(torch.from_numpy(images).permute(0, 3, 1, 2).float())
    return step(batch, split_idx=0).permute(0, 2, 3, 1).numpy()


def albumentations_step(index, images):
    step = A.Compose([albumentations_pipeline(MEAN, seed=0).transforms[i] for i in index], seed=0)
    return np.stack([step(image=image)["image"] for image in images])


STEPS = {
    "crop": (lambda images: gpu_step(PadCrop(), images), lambda images: albumentations_step([0, 1], images)),
    "flip": (lambda images: gpu_step(FlipLR(), images), lambda images: albumentations_step([2], images)),
}


@pytest.mark.parametrize("backend", [0, 1], ids=["gpu", "albumentations"])
def test_crop_is_a_shifted_copy_of_the_reflect_padded_image(backend):
    images = random_images()
    outs = STEPS["crop"][backend](images)
    offsets = [window_offset(out, image) for out, image in zip(outs, images)]
    assert None not in offsets
    assert len(set(offsets)) > 10  # offsets are drawn per image, over the whole 9x9 range


@pytest.mark.parametrize("backend", [0, 1], ids=["gpu", "albumentations"])
def test_flip_mirrors_about_half_of_the_images(backend):
    images = random_images()
    outs = STEPS["flip"][backend](images)
    mirrored = [is_mirror(out, image) for out, image in zip(outs, images)]
    assert all(m or np.array_equal(out, image) for m, out, image in zip(mirrored, outs, images))
    assert 0.25 < np.mean(mirrored) < 0.75


def test_gpu_cutout_fills_one_square_with_the_mean():
    images = random_images().astype(np.float32) + 1  # after Normalize the mean is 0: no pixel is 0 here
    outs = gpu_step(Cutout(), images)
    corners = [filled_square(out, image, (0, 0, 0)) for out, image in zip(outs, images)]
    assert len(set(corners)) > 10


def test_albumentations_cutout_fills_one_square_with_the_mean_pixel():
    images = random_images()
    outs = albumentations_step([3], images)
    corners = [filled_square(out, image, FILL) for out, image in zip(outs, images)]
    assert len(set(corners)) > 10


def test_augmentations_leave_validation_images_untouched():
    images = TensorImage(torch.randn(8, 3, 32, 32))
    gpu = Pipeline(gpu_augmentations(), split_idx=1)
    assert torch.equal(gpu(images), images)
    alb = AlbumentationsTransform(albumentations_pipeline(MEAN))
    image = random_images(1)[0]
    assert np.array_equal(np.asarray(alb(PILImage.create(image), split_idx=1)), image)


def test_gpu_transforms_compute_on_plain_tensors_and_hand_on_a_tensor_image(monkeypatch):
    """fastai's TensorImage runs Python around every operation on it; the transforms work on the
    plain tensor, and fastai's pipeline still hands on a TensorImage (decodes, show_batch)."""
    typed_ops = []
    monkeypatch.setattr(TensorBase, "__torch_function__", classmethod(lambda *args, **kwargs: typed_ops.append(args)))
    out = Pipeline(gpu_augmentations(), split_idx=0)(TensorImage(torch.randn(N, 3, 32, 32)))
    assert typed_ops == [] and type(out) is TensorImage


def test_gpu_transforms_make_their_index_ranges_once_per_shape(monkeypatch):
    pipeline = Pipeline(gpu_augmentations(), split_idx=0)
    batch = TensorImage(torch.randn(N, 3, 32, 32))
    pipeline(batch)
    made = []
    arange = torch.arange
    monkeypatch.setattr(torch, "arange", lambda *args, **kwargs: made.append(args) or arange(*args, **kwargs))
    pipeline(batch)
    assert made == []


def test_training_pipeline_runs_in_the_recipe_order():
    assert [type(t) for t in Pipeline(gpu_augmentations()).fs] == [PadCrop, FlipLR, Cutout]
    names = [type(t).__name__ for t in albumentations_pipeline(MEAN).transforms]
    assert names == ["PadIfNeeded", "RandomCrop", "HorizontalFlip", "CoarseDropout"]


def test_albumentations_workers_get_different_streams_and_a_seed_repeats():
    image = PILImage.create(random_images(1)[0])

    def stream(seed):
        torch.manual_seed(seed)
        t = AlbumentationsTransform(albumentations_pipeline(MEAN))
        return [np.asarray(t(image, split_idx=0)) for _ in range(4)]

    assert all(np.array_equal(a, b) for a, b in zip(stream(1), stream(1)))
    assert not all(np.array_equal(a, b) for a, b in zip(stream(1), stream(2)))


def test_importing_the_augmentations_never_asks_pypi_for_albumentations_updates(tmp_path):
    """albumentations looks for a newer version on PyPI when imported, its name lookup unbounded: on a
    machine without network (a GPU node, CI) each process could stall there."""
    looked_up = "import socket, sys; socket.getaddrinfo = lambda host, *a, **k: sys.exit(f'looked up {host}')"
    env = {key: value for key, value in os.environ.items() if key != "NO_ALBUMENTATIONS_UPDATE"}
    script = f"{looked_up}; import augment; augment.albumentations_pipeline((0.5, 0.5, 0.5))"
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
