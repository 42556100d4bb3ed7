import os
import re
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from augment import training_augmentations
from cifar10_fast.core.errors import DataError
from cifar10_fast.data import images, sources
from cifar10_fast.data.decoded_folder import channel_stats
from cifar10_fast.data.loaders import Squash, cifar10_dataloaders
from cifar10_fast.data.sources import cifar10_folder
from tests.conftest import CLASSES, class_value, write_folder, write_python_batches, write_tgz


def check_labels_match_pixels(dl, stats):
    """Every image of class k is the flat value class_value(k): undo Normalize and compare."""
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in stats)
    for x, y in dl:
        pixels = (x.as_subclass(torch.Tensor) * std + mean) * 255
        expected = torch.tensor([class_value(k) for k in y.tolist()], dtype=torch.float32).view(-1, 1, 1, 1)
        assert torch.allclose(pixels, expected.expand_as(pixels), atol=0.5)


def load(source, **kwargs):
    folder = cifar10_folder(str(source))
    dls, stats = cifar10_dataloaders(folder, bs=8, device="cpu", **kwargs)
    return folder, dls, stats


SOURCES = {  # name: (make, training images, test images)
    "png folder": (lambda tmp: write_folder(tmp / "cifar10"), 80, 20),
    "bmp folder": (lambda tmp: write_folder(tmp / "cifar10", suffix=".bmp"), 80, 20),
    "folder wrapping the layout": (lambda tmp: write_folder(tmp / "wrap" / "cifar10").parent, 80, 20),
    "fastai .tgz": (lambda tmp: write_tgz(write_folder(tmp / "cifar10"), tmp / "cifar10.tgz", "cifar10"), 80, 20),
    "python batches folder": (lambda tmp: write_python_batches(tmp / "cifar-10-batches-py"), 50, 20),
    "python .tar.gz": (lambda tmp: write_tgz(write_python_batches(tmp / "cifar-10-batches-py"),
                                             tmp / "cifar-10-python.tar.gz", "cifar-10-batches-py"), 50, 20),
}


@pytest.mark.parametrize("make,n_train,n_test", SOURCES.values(), ids=SOURCES.keys())
def test_every_source_format_gives_labelled_train_and_test_sets(tmp_path, make, n_train, n_test):
    folder, dls, stats = load(make(tmp_path))
    assert list(dls.vocab) == CLASSES
    assert (len(dls.train_ds), len(dls.valid_ds)) == (n_train, n_test)
    check_labels_match_pixels(dls.valid, stats)
    assert sum(len(y) for _, y in dls.valid) == n_test


def test_env_variable_is_the_default_source(tiny_folder, monkeypatch):
    monkeypatch.setenv("CIFAR10_DATA", str(tiny_folder))
    assert cifar10_folder() == tiny_folder


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


def test_archives_are_unpacked_once(tmp_path, isolated_cache):
    archive = write_tgz(write_folder(tmp_path / "cifar10"), tmp_path / "c.tgz", "cifar10")
    first = cifar10_folder(str(archive))
    assert first.is_relative_to(isolated_cache)
    (first / "marker").write_text("kept")
    assert cifar10_folder(str(archive)) == first and (first / "marker").exists()


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


def test_no_data_and_no_route_to_the_download_fails_within_seconds(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTAI_HOME", str(tmp_path / "fastai"))
    def hang(*args, **kwargs):  # a host with no route answers nothing: the connection (or name lookup) hangs
        time.sleep(20)
        raise TimeoutError

    monkeypatch.setattr(sources.socket, "create_connection", hang)
    start = time.perf_counter()
    with pytest.raises(DataError, match="cannot be reached: pass --data PATH or set CIFAR10_DATA"):
        cifar10_folder()
    assert time.perf_counter() - start < 10


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


def test_an_empty_cache_variable_means_the_default_cache_not_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CIFAR10_CACHE", "")
    archive = write_tgz(write_folder(tmp_path / "cifar10"), tmp_path / "c.tgz", "cifar10")
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert cifar10_folder(str(archive)).is_relative_to(tmp_path / "home" / ".cache" / "cifar10-fast")
    assert not any((tmp_path / "work").iterdir())


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
