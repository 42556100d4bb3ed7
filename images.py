"""Any image file as the 32x32 RGB uint8 pixels the model takes, and what had to change."""
import mimetypes
import os
import warnings

import numpy as np
from PIL import Image

from errors import BadInput

IMAGE_SIZE = 32
# fastai's `image_extensions`, computed as fastai computes it (after reading the system's
# mime.types), without importing fastai: predict.py must start fast.
mimetypes.init()
IMAGE_EXTENSIONS = frozenset(ext for ext, kind in mimetypes.types_map.items() if kind.startswith("image/"))


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
    Converted to RGB first, then squashed to 32x32 with PIL's bilinear filter, as fastai's
    `PILImage.create` and `Resize(method=ResizeMethod.Squish)` do in an exported learner.
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
        rgb = rgb.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
    return np.asarray(rgb), repairs
