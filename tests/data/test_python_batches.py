"""The checks of the python version, one by one (the bad-input table runs them through the CLI)."""
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from cifar10_fast.data.python_batches import labels_problem, load_pickled_arrays, pixels_problem, plain_folder_name
from cifar10_fast.data.sources import cifar10_folder
from tests.conftest import write_python_batches


@pytest.mark.parametrize("raw,name", [(b"cat", "cat"), (b"sea lion", "sea lion"), ("k\u00f6nig".encode(), "k\u00f6nig"),
                                      (b"", None), (b".", None), (b"..", None), (b".cat", None),
                                      (b"../../x", None), (b"a/b", None), (b"a\\b", None), (b"a\0b", None),
                                      (b"\xff\xfe", None)])
def test_a_class_name_must_be_a_plain_visible_folder_name(raw, name):
    assert plain_folder_name(raw) == name


@pytest.mark.parametrize("labels,n_images,problem", [
    ([0, 9, 3], 3, None),
    ([], 0, "no images"),
    ([0, 1], 3, "3 images but 2 labels"),
    ([0, 10], 2, "label 10, outside the 10 classes 0-9"),
    ([-1, 0], 2, "label -1, outside"),
    ([0.5, 1.0], 2, "not a list of class numbers"),
])
def test_every_image_has_one_label_among_the_classes(labels, n_images, problem):
    found = labels_problem(np.asarray(labels), n_images, 10)
    assert found is None if problem is None else problem in found


def test_a_batch_that_names_code_is_refused_before_it_runs(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(pickle.dumps({b"data": Payload()}))
    with pytest.raises(pickle.UnpicklingError, match="is not part of a CIFAR-10 batch"):
        load_pickled_arrays(batch)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("pixels,problem", [
    (np.zeros(6, dtype=np.uint8), None),
    (np.array([0, 255, 17]), None),
    (np.array([0.0, 0.5, 1.0]), "its pixels are float64 numbers from 0 to 1, not the integers 0-255"),
    (np.array([0, 256, 300]), "its pixels run from 0 to 300, outside the 0-255"),
    (np.array([-1, 3]), "its pixels run from -1 to 3"),
])
def test_pixels_must_be_the_integers_0_to_255(pixels, problem):
    """Floats in [0, 1] trained on black images, and values past 255 wrapped around, silently."""
    found = pixels_problem(pixels)
    assert found is None if problem is None else problem in found


def test_an_edited_batch_is_converted_again(tmp_path, isolated_cache):
    """The conversion was named after test_batch alone: an edited data_batch_1 trained on the old images."""
    batches = write_python_batches(tmp_path / "cifar-10-batches-py")
    first = cifar10_folder(str(batches))
    edited = pickle.loads((batches / "data_batch_1").read_bytes())
    edited[b"data"] = np.full_like(edited[b"data"], 7)
    (batches / "data_batch_1").write_bytes(pickle.dumps(edited))
    again = cifar10_folder(str(batches))
    assert again != first
    cat = Image.open(next((again / "train" / "cat").glob("data_batch_1-*.png")))
    assert np.asarray(cat).max() == 7
