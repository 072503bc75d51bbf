"""Image files checked in Python before they reach a ``tf.data`` graph.

A corrupt, truncated or missing image would otherwise fail inside ``tf.io.decode_image`` deep in a
parallel map, far from the file that caused it. Folder sources call :func:`check_images` while they
list their examples and skip (with a warning naming the file) whatever fails here.

The check decodes each file with Pillow, in the formats ``tf.io.decode_image`` reads. JPEGs are
decoded at 1/8 scale (``Image.draft``): libjpeg still reads every entropy-coded block, so a
truncated file is still caught, at a fraction of the cost of a full decode.
"""

from __future__ import annotations

import concurrent.futures
import os

from PIL import Image

# What tf.io.decode_image can decode.
TF_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP")


def check_image(path) -> tuple:
    """Decode ``path`` -> ``(height, width)``; raises ``ValueError`` saying what is wrong."""
    if not os.path.isfile(path):
        raise ValueError("image file is missing")
    try:
        with Image.open(path) as image:
            if image.format not in TF_FORMATS:
                raise ValueError(f"image format {image.format} is not one TensorFlow decodes {TF_FORMATS}")
            width, height = image.size
            if image.format == "JPEG":
                image.draft(image.mode, (max(width // 8, 1), max(height // 8, 1)))
            image.load()
    except ValueError:
        raise
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ...) for bad files.
        raise ValueError(f"image file is corrupt or unreadable ({type(error).__name__}: {error})") from None
    if width < 1 or height < 1:
        raise ValueError(f"image is empty ({width} x {height})")
    return height, width


def check_images(paths, max_workers=None) -> list:
    """:func:`check_image` over ``paths`` in threads (Pillow decodes without the GIL).

    Returns one entry per path: ``(height, width)`` or the ``ValueError`` it raised.
    """

    def one(path):
        try:
            return check_image(path)
        except ValueError as error:
            return error

    workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))
