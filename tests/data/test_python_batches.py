"""The checks of the python version, one by one (the bad-input table runs them through the CLI)."""
import os
import pickle

import numpy as np
import pytest

from cifar10_fast.data.python_batches import labels_problem, load_pickled_arrays, plain_folder_name


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
