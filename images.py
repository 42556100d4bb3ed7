"""Any image file as the 32x32 RGB uint8 pixels the model takes, and what had to change; many
files read with all of the machine's cores."""
import mimetypes
import mmap
import multiprocessing
import os
import signal
import sys
import warnings

import numpy as np
from PIL import Image

from errors import BadInput

IMAGE_SIZE = 32
# fastai's `image_extensions`, computed as fastai computes it (after reading the system's
# mime.types), without importing fastai: predict.py must start fast.
mimetypes.init()
IMAGE_EXTENSIONS = frozenset(ext for ext, kind in mimetypes.types_map.items() if kind.startswith("image/"))
# Files a process reads at a time: enough that handing them out costs nothing, few enough that
# every core gets its share of a small set.
CHUNK = 500


class UnreadableImage(BadInput):
    """An image file that PIL cannot decode."""


def has_image_extension(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def to_rgb(image):
    """8-bit RGB. 16-bit grayscale keeps its top 8 bits: PIL's convert would clip it to white."""
    if image.mode.startswith("I"):
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    return image.convert("RGB")


def open_rgb(path):
    """(the image in 8-bit RGB, repairs). An image above PIL's decompression-bomb limit raises,
    as one twice that size does: PIL only warns of it, in two lines of its own, and decodes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(path) as image:
            image.load()  # a truncated file fails here, not later
            return to_rgb(image), [] if image.mode == "RGB" else [f"mode {image.mode}"]


def read_rgb32(path):
    """(HWC uint8 pixels, repairs): repairs names each change, e.g. ["mode L", "size 40x20"].
    Converted to RGB first, as fastai's `PILImage.create` does, then `squashed`, as data.Squash does
    in an exported learner.
    Raises UnreadableImage, naming the file, for a file PIL cannot decode or will not."""
    try:
        rgb, repairs = open_rgb(path)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as e:
        raise UnreadableImage(f"cannot read image {path} (more than PIL's limit of {Image.MAX_IMAGE_PIXELS:,} pixels, "
                              "a guard against decompression bombs): shrink it or remove it") from e
    except Exception as e:  # PIL raises many kinds on a damaged file: OSError, SyntaxError, struct.error...
        raise UnreadableImage(f"cannot read image {path} ({type(e).__name__}): replace it with an image "
                              "PIL reads (PNG, JPEG, ...) or remove it") from e
    if rgb.size != (IMAGE_SIZE, IMAGE_SIZE):
        repairs.append("size {}x{}".format(*rgb.size))
    return np.asarray(squashed(rgb)), repairs


def squashed(image):
    """A PIL image squashed to 32x32 with PIL's bilinear filter, as fastai's
    `Resize(method=ResizeMethod.Squish)` does (fastai's default would crop)."""
    return image if image.size == (IMAGE_SIZE, IMAGE_SIZE) else image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)


def read_rgb32_all(paths):
    """(uint8 (N, 32, 32, 3) pixels, which files could be read, every repair made (as "mode L",
    "size 40x20")): `read_rgb32` of each of `paths`, zeros where a file cannot be read.

    One core reads 60,000 CIFAR-10 JPEGs in 15-30 s, so on Linux the files are shared out among
    forked processes, one per usable core, which write the pixels straight into memory shared with
    this process. Forked, they start at once with what is imported already (spawned, each would
    import torch again). Elsewhere, and for a few hundred files, they are read in this process."""
    pixels = IMAGE_SIZE * IMAGE_SIZE * 3
    images = np.frombuffer(mmap.mmap(-1, max(1, len(paths)) * pixels), np.uint8)  # shared with forked children
    images = images[:len(paths) * pixels].reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 3)
    starts = range(0, len(paths), CHUNK)
    processes = reading_processes(len(paths))
    try:
        if processes > 1:
            with multiprocessing.get_context("fork").Pool(processes, start_reader, (images, paths)) as pool:
                read = pool.map(read_chunk, starts)  # on Ctrl-C or SIGTERM, leaving the block ends the workers
        else:
            reading.update(images=images, paths=paths)
            read = list(map(read_chunk, starts))
    finally:
        reading.clear()
    readable = np.concatenate([np.ones(0, bool), *(chunk_readable for chunk_readable, _ in read)])
    return images, readable, [change for _, repairs in read for change in repairs]


def reading_processes(n_files):
    """How many processes read `n_files` files: a chunk each at least, one per usable core at most;
    one where processes are not forked."""
    if sys.platform != "linux":
        return 1
    cores = len(os.sched_getaffinity(0))  # those this process may use
    return max(1, min(cores, -(-n_files // CHUNK)))


reading = {}  # the files being read and the pixels they go into, in each reading process


def start_reader(images, paths):
    """A forked reader ignores Ctrl-C and dies of SIGTERM: the parent decides what an interruption
    does, and a reader never prints a traceback of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    reading.update(images=images, paths=paths)


def read_chunk(start):
    """Reads the CHUNK files from `start` into the pixels; returns which could be read, and the repairs."""
    paths, images = reading["paths"][start:start + CHUNK], reading["images"]
    readable = np.ones(len(paths), dtype=bool)
    repairs = []
    for i, path in enumerate(paths):
        try:
            images[start + i], changes = read_rgb32(path)
        except UnreadableImage:
            readable[i] = False
            continue
        repairs += changes
    return readable, repairs
