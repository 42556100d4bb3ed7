"""fastai DataLoaders over a decoded folder: the split, the augmentation, the subset, the order, the
normalisation, images of any size, and images PIL refuses."""
import os
import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from augment import training_augmentations
from cifar10_fast.core.errors import DataError
from cifar10_fast.data import images
from cifar10_fast.data.decoded_folder import channel_stats
from cifar10_fast.data.loaders import Squash
from tests.conftest import CLASSES, check_labels_match_pixels, load


def test_training_batches_are_augmented_and_test_batches_are_not(tiny_folder):
    _, dls, stats = load(tiny_folder, augmentations=training_augmentations("gpu"))
    x, _ = dls.train.one_batch()
    # Cutout puts the mean (0 after Normalize) into flat class images, which hold no mean pixel.
    assert ((x == 0).all(1).sum((1, 2)) == 64).all()
    check_labels_match_pixels(dls.valid, stats)


def test_decoded_pixels_are_cached_and_refreshed_when_a_file_changes(tiny_folder, monkeypatch):
    load(tiny_folder)
    calls = []
    real_read = images.read_rgb32
    monkeypatch.setattr(images, "read_rgb32", lambda p: calls.append(p) or real_read(p))
    load(tiny_folder)
    assert calls == []
    changed = tiny_folder / "test" / "cat" / "0000.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(changed)
    os.utime(changed, ns=(1, 1))
    _, dls, _ = load(tiny_folder)
    assert calls == [str(changed)]  # that file alone
    row = dls.valid_ds.items.index(changed)
    assert (dls.valid.images[row] == 0).all()


def test_subset_takes_the_first_n_training_images_of_every_class(tiny_folder):
    _, dls, _ = load(tiny_folder, subset=20)
    train = dls.train_ds.items
    assert (len(train), len(dls.valid_ds)) == (20, 20)
    assert all(p.parent.parent.name == "train" for p in train)
    assert [p.parent.name for p in train] == CLASSES * 2  # class-interleaved
    assert {p.name for p in train} == {"0000.png", "0001.png"}


def test_channel_stats_are_exact():
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(images)
    pixels = images.permute(1, 0, 2, 3).reshape(3, -1).double() / 255
    assert np.allclose(mean, pixels.mean(1)) and np.allclose(std, pixels.std(1))


def test_albumentations_backend_serves_the_same_split(tiny_folder):
    _, dls, stats = load(tiny_folder, on_device=False, workers=0,
                            augmentations=training_augmentations("albumentations", seed=0))
    x, _ = dls.train.one_batch()
    assert x.shape == (8, 3, 32, 32)
    check_labels_match_pixels(dls.valid, stats)


def test_the_per_item_path_serves_files_without_device_images(tiny_folder):
    _, dls, stats = load(tiny_folder)
    files = sorted((tiny_folder / "test").rglob("*.png"))
    test_dl = dls.test_dl(files, with_labels=True)
    assert test_dl.images is None
    check_labels_match_pixels(test_dl, stats)


def test_files_of_another_size_are_squashed_as_fastais_resize_squashes_them_and_predict_reads_them(tiny_folder,
                                                                                                      tmp_path):
    """The exported learner's item transforms squash any size to 32x32 as fastai's Resize(method=Squish)
    does, and as the decoded cache and predict.py do (images.read_rgb32), without loading torchvision."""
    from fastai.vision.augment import Resize, ResizeMethod
    from fastai.vision.core import PILImage
    _, dls, stats = load(tiny_folder)
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 48, 3), dtype=np.uint8)).save(path)
    image = PILImage.create(path)
    squashed = np.asarray(Squash()(image))
    assert np.array_equal(squashed, np.asarray(Resize(32, method=ResizeMethod.Squish)(image, split_idx=1)))
    assert np.array_equal(squashed, images.read_rgb32(path)[0])
    served, = dls.test_dl([path], with_labels=False).one_batch()
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in stats)
    pixels = (served.as_subclass(torch.Tensor) * std + mean) * 255
    assert torch.allclose(pixels[0], torch.tensor(squashed).permute(2, 0, 1).float(), atol=1e-3)


def test_the_loaders_serve_test_batches_that_divide_the_test_set(tiny_folder):
    _, dls, _ = load(tiny_folder)  # 20 test images, bs 8
    assert [len(y) for _, y in dls.valid] == [10, 10]


def test_the_seed_sets_the_training_order(tiny_folder):
    def labels(seed):
        return [y.tolist() for _, y in load(tiny_folder, seed=seed)[1].train]

    assert labels(0) == labels(0) != labels(1)


def test_image_files_are_told_by_fastais_extensions():
    from fastai.vision.all import image_extensions
    assert images.IMAGE_EXTENSIONS == image_extensions


def test_hidden_folders_are_not_classes_in_test_either(tiny_folder):
    (tiny_folder / "test" / ".ipynb_checkpoints").mkdir()
    _, dls, _ = load(tiny_folder)
    assert list(dls.vocab) == CLASSES


def image_above_pils_bomb_limit(folder, split, monkeypatch):
    """A 64x64 image in `split`/cat/, above PIL's decompression-bomb limit set to 3,000 pixels:
    PIL only warns below twice the limit (as of a 12000x12000 image at its default limit)."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    big = folder / split / "cat" / "0000.png"
    Image.new("RGB", (64, 64)).save(big)
    return big


def test_a_training_image_above_pils_bomb_limit_is_skipped_with_our_warning_alone(tiny_folder, monkeypatch, capsys):
    big = image_above_pils_bomb_limit(tiny_folder, "train", monkeypatch)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always", Image.DecompressionBombWarning)
        _, dls, _ = load(tiny_folder)
    assert not [w for w in shown if issubclass(w.category, Image.DecompressionBombWarning)]
    assert len(dls.train_ds) == 79
    warned = [line for line in capsys.readouterr().err.splitlines() if "warning:" in line]
    assert warned == [f"warning: skipped 1 unreadable training images (such as {big}): remove or replace them to "
                      "silence this"]


def test_a_test_image_above_pils_bomb_limit_is_refused_naming_it(tiny_folder, monkeypatch):
    big = image_above_pils_bomb_limit(tiny_folder, "test", monkeypatch)
    with pytest.raises(DataError, match=f"cannot read image {re.escape(str(big))} .*decompression bombs"):
        load(tiny_folder)
