"""CIFAR-10 from whatever the user has, as a folder in fastai's layout.

Sources, in the order they are looked for:
- `--data PATH` or the environment variable CIFAR10_DATA: a folder or a .tgz in fastai's
  URLs.CIFAR layout (train/<class>/*, test/<class>/*, any image format), or the official python
  version (the cifar-10-batches-py/ folder or cifar-10-python.tar.gz);
- otherwise fastai's `untar_data(URLs.CIFAR)` download.
Archives are unpacked (archives.py), and python batches written out as PNG files in that layout,
once, into the cache folder (cache.py: CIFAR10_CACHE, default ~/.cache/cifar10-fast, also when
empty).
"""
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from fastai.data.external import URLs, fastai_path, untar_data
from PIL import Image

from cifar10_fast.core.errors import DataError
from cifar10_fast.data.archives import unpack
from cifar10_fast.data.cache import CONVERTED, build_once, cache_root, entry_name
from cifar10_fast.data.layout import PYTHON_BATCHES, PYTHON_VERSION, SPLITS, find_layout
from cifar10_fast.data.python_batches import PYTHON_META, python_class_names, read_python_batch

DOWNLOAD_TIMEOUT_S = 30
REACH_TIMEOUT_S = 3


def cifar10_folder(data=None):
    """The folder (train/<class>/*, test/<class>/*) for `data`, CIFAR10_DATA or the download."""
    data = data or os.environ.get("CIFAR10_DATA")
    if not data:
        return download()
    path = Path(data).expanduser().absolute()
    if not path.exists():
        raise DataError(f"{path} does not exist: point --data or CIFAR10_DATA at a CIFAR-10 folder or .tgz")
    if path.is_file():
        path = unpack(path)
    elif not path.is_dir():
        raise DataError(f"{path} is neither a folder nor a regular file (a device, a pipe or a socket): point --data "
                        "or CIFAR10_DATA at a CIFAR-10 folder or .tgz")
    return layout_folder(path)


def reachable(url, timeout=REACH_TIMEOUT_S):
    """Whether `url`'s host takes a connection within `timeout` seconds, the name lookup included
    (which has no timeout of its own, hence the thread)."""
    address = urlparse(url)
    connected = []

    def connect():
        try:
            socket.create_connection((address.hostname, address.port or 443), timeout=timeout).close()
            connected.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(connected)


def download():
    already_here = (fastai_path("data") / Path(urlparse(URLs.CIFAR).path).stem).exists()  # untar_data's folder
    if not already_here and not reachable(URLs.CIFAR):
        raise DataError(f"no CIFAR-10 here and {urlparse(URLs.CIFAR).hostname} cannot be reached: pass --data PATH "
                        "or set CIFAR10_DATA to a local copy (a CIFAR-10 folder or .tgz)")
    # fastai's download has no timeout of its own: without one, a machine with no route out hangs.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return layout_folder(untar_data(URLs.CIFAR))
    except Exception as e:
        raise DataError(f"could not download CIFAR-10 ({type(e).__name__}: {e}); "
                        "pass --data PATH or set CIFAR10_DATA to a local copy") from None
    finally:
        socket.setdefaulttimeout(previous)


def layout_folder(path):
    """fastai's layout in `path`, or in the one folder an archive usually wraps it in, made from the
    python batches where those are what it holds. Its listing checks it (a converted one too:
    damaged batches can still make a folder that trains nothing useful, such as one with a single
    class)."""
    kind, folder = find_layout(path)
    return python_batches_to_folder(folder) if kind == PYTHON_VERSION else folder


def python_batches_to_folder(batches):
    """Write the official python version out in fastai's layout (PNG is lossless)."""
    classes = python_class_names(batches)

    def write(tmp):
        print(f"writing the python batches in {batches} out as PNG files in the cache (once)")
        for split in SPLITS:
            for name in classes:
                (tmp / split / name).mkdir(parents=True)
        for name in PYTHON_BATCHES:
            split = "test" if name == "test_batch" else "train"
            images, labels = read_python_batch(batches / name, len(classes))
            for i, (image, label) in enumerate(zip(images, labels)):
                Image.fromarray(image).save(tmp / split / classes[label] / f"{name}-{i:05d}.png")

    entry = entry_name(batches, members=[*PYTHON_BATCHES, PYTHON_META])  # every file it is made from
    return build_once(cache_root() / CONVERTED / entry, write, f"writing out the python batches in {batches}")
