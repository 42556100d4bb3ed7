"""The official python version of CIFAR-10 (cifar-10-batches-py/: five training batches, a test
batch, batches.meta), read and checked before data.py writes it out in fastai's layout.

The files are pickles, and a pickle can name code to run; their class names become folders, and
a name can lead anywhere (`../..`) or, differing from another only in case, share its folder on a
disk that ignores case. So the unpickler takes arrays only, and every name, label and count is
checked: a damaged or hostile copy ends in one line that names its file.
"""
import pickle

import numpy as np

from cifar10_fast.core.errors import DataError
from cifar10_fast.data.images import IMAGE_SIZE
from cifar10_fast.data.layout import differing_only_in_case

PYTHON_META = "batches.meta"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DOWNLOAD_PYTHON_AGAIN = "download cifar-10-python.tar.gz again"


class ArraysOnly(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays, nothing else: a tampered batch file cannot
    name a function to run."""
    allowed = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
               ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self.allowed:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of a CIFAR-10 batch")
        return super().find_class(module, name)


def load_pickled_arrays(path):
    with open(path, "rb") as f:
        return ArraysOnly(f, encoding="bytes").load()


def read_python_batch(path, n_classes):
    """(images, labels) of one batch file, refused unless every image has one label naming one of
    the `n_classes` classes."""
    try:
        batch = load_pickled_arrays(path)
        pixels = np.asarray(batch[b"data"])
        images = pixels.reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
        labels = np.asarray(batch[b"labels"])
    except Exception as e:
        raise DataError(f"{path} is not a readable CIFAR-10 python batch ({type(e).__name__}): "
                        f"{DOWNLOAD_PYTHON_AGAIN}") from None
    problem = pixels_problem(pixels) or labels_problem(labels, len(images), n_classes)
    if problem:
        raise DataError(f"{path} is damaged ({problem}): {DOWNLOAD_PYTHON_AGAIN}")
    return images.astype(np.uint8).transpose(0, 2, 3, 1), labels


def pixels_problem(pixels):
    """What is wrong with a batch's pixels, or None: CIFAR-10's are integers from 0 to 255. Floats
    (in [0, 1], say) would become black images, and values past 255 wrap around, both silently."""
    if pixels.size == 0:
        return None  # no images: labels_problem says so
    low, high = pixels.min(), pixels.max()
    if pixels.dtype.kind not in "iu":
        return f"its pixels are {pixels.dtype} numbers from {low:g} to {high:g}, not the integers 0-255 of CIFAR-10"
    if low < 0 or high > 255:
        return f"its pixels run from {low} to {high}, outside the 0-255 of CIFAR-10"
    return None


def labels_problem(labels, n_images, n_classes):
    """What is wrong with a batch's labels, or None."""
    if n_images == 0:
        return "it holds no images"
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        return "its labels are not a list of class numbers"
    if len(labels) != n_images:
        return f"{n_images} images but {len(labels)} labels"
    outside = labels[(labels < 0) | (labels >= n_classes)]
    if outside.size:
        return f"label {outside[0]}, outside the {n_classes} classes 0-{n_classes - 1}"
    return None


def python_class_names(batches):
    """The class names of batches.meta, or CIFAR-10's without one. Each becomes a folder under the
    cache, so a name that is not a plain folder name could write anywhere (`../..`) or go unseen
    (`.hidden`), and two equal names would merge two classes, as two that differ only in case
    would on a disk that ignores case."""
    meta = batches / PYTHON_META
    if not meta.is_file():
        return CIFAR10_NAMES
    raw_names = read_label_names(meta)
    names = [plain_folder_name(raw) for raw in raw_names]
    if None in names:
        raise DataError(f"{meta} is refused as unsafe (class name {raw_names[names.index(None)]!r} is not a plain "
                        f"folder name): {DOWNLOAD_PYTHON_AGAIN}")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise DataError(f"{meta} names class {twice[0]!r} more than once: {DOWNLOAD_PYTHON_AGAIN}")
    clash = differing_only_in_case(names)
    if clash:
        raise DataError(f"{meta} names classes {clash[0]!r} and {clash[1]!r}, which differ only in case: one folder on "
                        f"a disk that ignores case (macOS, Windows); {DOWNLOAD_PYTHON_AGAIN}")
    return names


def read_label_names(meta):
    """batches.meta's label_names: byte strings, as Python 2 pickled them."""
    try:
        names = load_pickled_arrays(meta)[b"label_names"]
        if not all(isinstance(name, bytes) for name in names):
            raise TypeError("label_names holds more than byte strings")
        return list(names)
    except Exception as e:
        raise DataError(f"{meta} is not a readable CIFAR-10 batches.meta ({type(e).__name__}): "
                        f"{DOWNLOAD_PYTHON_AGAIN}") from None


def plain_folder_name(raw):
    """`raw` decoded, or None where it is not a visible folder name that stays in its folder."""
    try:
        name = raw.decode()
    except UnicodeDecodeError:
        return None
    if not name or name.startswith(".") or any(c in name for c in "/\\\0"):
        return None
    return name
