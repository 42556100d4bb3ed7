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

from cifar10_fast.core.errors import BadInput
from cifar10_fast.core.lifecycle import STOP_SIGNALS, stop_signals_blocked

IMAGE_SIZE = 32
# fastai's `image_extensions`, computed as fastai computes it (after reading the system's
# mime.types), without importing fastai: predict.py must start fast.
mimetypes.init()
IMAGE_EXTENSIONS = frozenset(ext for ext, kind in mimetypes.types_map.items() if kind.startswith("image/"))
# The fewest files worth a reading process of their own: enough that forking it costs little
# beside them, few enough that every core gets its share of a small set.
CHUNK = 500


class UnreadableImage(BadInput):
    """An image file that PIL cannot decode."""


def has_image_extension(name):
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def to_rgb(image):
    """8-bit RGB. An integer grayscale image of more bits keeps its top 8 (PIL's convert would clip
    it to white): a 16-bit one (modes I;16...) by its type, a 32-bit one (mode I) by the values it
    holds, as 8, 16 or 32 bits (PIL opens 8- and 16-bit images of some formats as mode I)."""
    if image.mode.startswith("I"):
        values = np.asarray(image).astype(np.int64).clip(0)
        bits = 16 if image.mode.startswith("I;16") else next(b for b in (8, 16, 32) if values.max() < 2**b)
        image = Image.fromarray((values >> (bits - 8)).astype(np.uint8))
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
    pixels = np.frombuffer(shared_memory(len(paths) * IMAGE_SIZE * IMAGE_SIZE * 3), np.uint8)
    pixels = pixels.reshape(-1, IMAGE_SIZE, IMAGE_SIZE, 3)
    readable = np.frombuffer(shared_memory(len(paths)), bool)
    processes = reading_processes(len(paths))
    shares = np.array_split(np.arange(len(paths)), processes)
    if processes > 1:
        repairs = read_in_forked_processes(pixels, readable, paths, shares)
    else:
        repairs = read_share(pixels, readable, paths, shares[0])
    return pixels, readable, repairs


def shared_memory(size):
    """`size` zero bytes that a forked process writes into and this one sees."""
    return memoryview(mmap.mmap(-1, max(1, size)))[:size]


def reading_processes(n_files):
    """How many processes read `n_files` files: CHUNK files each at least, one per usable core at most;
    one where processes are not forked."""
    if sys.platform != "linux":
        return 1
    cores = len(os.sched_getaffinity(0))  # those this process may use
    return max(1, min(cores, -(-n_files // CHUNK)))


def read_in_forked_processes(pixels, readable, paths, shares):
    """Each of `shares` of the files read by a forked process; their repairs, in the files' order.

    No reader outlives this call, however it ends: on Ctrl-C or SIGTERM, or if a reader dies, the
    others are killed (they hold nothing but the shared memory) and waited for. This process wakes
    every tenth of a second, because its signal handler runs only in its main thread, and a signal
    sent to the process may be taken by another of its threads (torch's, say): a main thread that
    waited without a timeout would not see it until the readers were done."""
    context = multiprocessing.get_context("fork")
    readers = []
    try:
        with stop_signals_blocked():  # a reader starts with this process's handlers, until it sets its own
            for share in shares:
                receiving, sending = context.Pipe(duplex=False)
                reader = context.Process(target=reader_main, args=(pixels, readable, paths, share, sending),
                                         daemon=True)
                reader.start()
                sending.close()
                readers.append((reader, receiving))
        return [change for reader, receiving in readers for change in reader_repairs(reader, receiving)]
    finally:
        for reader, receiving in readers:
            reader.kill()
            reader.join()
            receiving.close()


def reader_main(pixels, readable, paths, share, sending):
    """A forked reader ignores Ctrl-C and dies of SIGTERM: the parent decides what an interruption
    does, and a reader never prints a traceback of its own. It sends its repairs when done."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    sending.send(read_share(pixels, readable, paths, share))


def reader_repairs(reader, receiving):
    """The repairs `reader` sends when done, waited for a tenth of a second at a time."""
    while not receiving.poll(0.1):
        pass
    try:
        return receiving.recv()
    except EOFError:  # it ended without sending them
        reader.join()
        ended = f"was killed by {signal.Signals(-reader.exitcode).name}" if reader.exitcode < 0 else \
            f"ended with exit status {reader.exitcode}"
        raise BadInput(f"a process reading the images {ended}, perhaps for want of memory: run again, with fewer "
                       "other programs running") from None


def read_share(pixels, readable, paths, share):
    """Reads the files at the indices `share` into the pixels; returns the repairs made."""
    repairs = []
    for i in share.tolist():
        try:
            pixels[i], changes = read_rgb32(paths[i])
        except UnreadableImage:
            continue
        readable[i] = True
        repairs += changes
    return repairs
