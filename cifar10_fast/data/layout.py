"""The layout of a CIFAR-10 folder: fastai's (train/<class>/*, test/<class>/*), or the official
python version, found and checked from the names of folders and files alone, without loading torch,
so that a folder the run cannot use is refused in a fraction of a second (train_fastai.py asks
before its imports)."""
import unicodedata
from pathlib import Path

from cifar10_fast.core.errors import DataError, counted, warn

SPLITS = ("train", "test")
CIFAR10_CLASSES = 10
PYTHON_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
FASTAI_LAYOUT, PYTHON_VERSION = "fastai's layout", "the python version"


def find_layout(path):
    """(FASTAI_LAYOUT or PYTHON_VERSION, the folder that holds it): `path` or the one folder an
    archive usually wraps it in."""
    for candidate in [path, *sorted(p for p in Path(path).iterdir() if p.is_dir())]:
        if all((candidate / split).is_dir() for split in SPLITS):
            return FASTAI_LAYOUT, candidate
        if all((candidate / name).is_file() for name in PYTHON_BATCHES):
            return PYTHON_VERSION, candidate
    raise DataError(f"{path} holds neither train/ and test/ class folders nor the python batches "
                    f"({', '.join(PYTHON_BATCHES)}): point --data at a CIFAR-10 copy")


def check_folder(path):
    """Refuse the data folder `path` where its layout cannot train: what can be known before torch
    loads (the python version's files are checked as they are converted)."""
    kind, folder = find_layout(path)
    if kind == FASTAI_LAYOUT:
        check_classes(folder)


def class_names(folder, split="train"):
    return sorted(p.name for p in (folder / split).iterdir() if p.is_dir() and not p.name.startswith("."))


def check_classes(folder):
    classes = class_names(folder)
    if len(classes) < 2:
        raise DataError(f"{folder / 'train'} has {counted(len(classes), 'class folder')}: expected "
                        f"train/<class>/<image> files for the {CIFAR10_CLASSES} CIFAR-10 classes")
    test_classes = class_names(folder, "test")
    if test_classes != classes:
        raise DataError(f"{folder}: train/ and test/ have different class folders "
                        f"({differing(classes, test_classes)}): give both the same classes")
    clash = differing_only_in_case(classes)
    if clash:
        raise DataError(f"{folder / 'train'} has class folders {clash[0]!r} and {clash[1]!r}, whose names differ only "
                        "in case or in their Unicode form: one folder on a disk that ignores case (macOS, Windows), "
                        "one class to a reader; rename one of them")
    if len(classes) != CIFAR10_CLASSES:
        warn(f"{folder / 'train'} has {len(classes)} class folders, not CIFAR-10's {CIFAR10_CLASSES}: "
             f"training a {len(classes)}-class model")
    return classes


def differing(train, test):
    """What sets the class folders of train/ and test/ apart, as a reader can see it: those only in
    one of them; written letter by letter (ascii) where they look alike, differing only in their
    Unicode form (é as one letter, or as e and an accent)."""
    only_train, only_test = sorted(set(train) - set(test)), sorted(set(test) - set(train))
    alike = {normal_form(name) for name in only_train} & {normal_form(name) for name in only_test}
    shown = ascii if alike else str
    return (f"only in train/: {', '.join(map(shown, only_train)) or 'none'}; "
            f"only in test/: {', '.join(map(shown, only_test)) or 'none'}"
            + ("; they differ only in their Unicode form" if alike else ""))


def normal_form(name):
    return unicodedata.normalize("NFC", name).casefold()


def differing_only_in_case(names):
    """The first two of `names` that differ only in case or in their Unicode form (as "Cat" and
    "cat"; "café" with é as one letter or as two), or None."""
    seen = {}
    for name in names:
        other = seen.setdefault(normal_form(name), name)
        if other != name:
            return other, name
    return None
