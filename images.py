"""Any image file as the 32x32 RGB uint8 pixels the model takes, and what had to change."""
import numpy as np
from PIL import Image

IMAGE_SIZE = 32


def to_rgb(image):
    """8-bit RGB. 16-bit grayscale keeps its top 8 bits: PIL's convert would clip it to white."""
    if image.mode.startswith("I"):
        image = Image.fromarray((np.asarray(image).astype(np.uint32) >> 8).clip(0, 255).astype(np.uint8))
    return image.convert("RGB")


def read_rgb32(path):
    """(HWC uint8 pixels, repairs): repairs names each change, e.g. ["mode L", "size 40x20"].
    Raises what PIL raises on a file it cannot read."""
    with Image.open(path) as image:
        image.load()  # a truncated file fails here, not later
        repairs = [] if image.mode == "RGB" else [f"mode {image.mode}"]
        if image.size != (IMAGE_SIZE, IMAGE_SIZE):
            repairs.append("size {}x{}".format(*image.size))
            image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
        return np.asarray(to_rgb(image)), repairs
