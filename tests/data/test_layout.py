"""A CIFAR-10 folder's layout, found and checked from names alone: what it refuses, and that
train_fastai.py refuses it before torch loads."""
import os
import subprocess
import sys
import unicodedata

import pytest

from cifar10_fast.core.errors import DataError
from cifar10_fast.data.layout import check_folder
from tests.conftest import CLASSES, REPO, write_folder


def test_train_and_test_of_other_classes_are_refused_naming_those_only_in_one(tmp_path):
    data = write_folder(tmp_path / "data")
    (data / "test" / "truck").rename(data / "test" / "lorry")
    with pytest.raises(DataError, match=r"different class folders \(only in train/: truck; only in test/: lorry\)"):
        check_folder(data)


def test_class_names_alike_but_for_their_unicode_form_are_named_letter_by_letter(tmp_path):
    """café with é as one letter in train/ and as e and an accent in test/: two folders that look
    the same, named so that a reader sees why they differ."""
    composed, decomposed = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")
    data = write_folder(tmp_path / "data", classes=[composed, *CLASSES[1:]])
    (data / "test" / composed).rename(data / "test" / decomposed)
    with pytest.raises(DataError) as refused:
        check_folder(data)
    assert f"only in train/: {ascii(composed)}; only in test/: {ascii(decomposed)}" in str(refused.value)
    assert "differ only in their Unicode form" in str(refused.value)


def test_two_class_folders_that_one_disk_or_reader_takes_for_one_are_refused(tmp_path):
    data = write_folder(tmp_path / "data", classes=[unicodedata.normalize("NFC", "café"),
                                                    unicodedata.normalize("NFD", "café"), *CLASSES[2:]])
    with pytest.raises(DataError, match="differ only in case or in their Unicode form"):
        check_folder(data)


def test_one_class_is_refused(tmp_path):
    data = write_folder(tmp_path / "data", classes=["cat"])
    with pytest.raises(DataError, match=r"has 1 class folder: expected train/<class>/<image> files"):
        check_folder(data)


@pytest.mark.parametrize("damage", ["test/ of other classes", "one class", "a class folder that is a link loop"])
def test_train_fastai_refuses_a_layout_that_cannot_train_before_torch_loads(tmp_path, damage):
    """These were refused only once torch and fastai had loaded and the folder had been listed."""
    data = write_folder(tmp_path / "data", n_train=1, n_test=1)
    if damage == "test/ of other classes":
        (data / "test" / "truck").rename(data / "test" / "lorry")
    else:
        for split in ("train", "test"):
            for name in CLASSES[1:]:
                for image in (data / split / name).iterdir():
                    image.unlink()
                (data / split / name).rmdir()
        if damage == "a class folder that is a link loop":
            os.symlink(data / "train", data / "train" / "loop")
    done = subprocess.run([sys.executable, "-X", "importtime", str(REPO / "train_fastai.py"), "--data", str(data)],
                          cwd=tmp_path, capture_output=True, text=True)
    imported = [line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")]
    said = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and len(said) == 1 and said[0].startswith("error: "), said
    assert "torch" not in imported and "fastai" not in imported
