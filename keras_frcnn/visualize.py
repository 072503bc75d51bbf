"""Drawing detections (predict output, TensorBoard images, the serving client) with Pillow.

``keras.visualization.draw_bounding_boxes`` needs OpenCV; Pillow is already a dependency and its
``ImageDraw`` does the job in a few lines. Class names are drawn in Matplotlib's DejaVu Sans (Latin,
Greek, Cyrillic), or for other scripts (a class named 猫) in the first of the system's fonts that
has every character (:func:`font_file_for`), at a size that grows with the image.
"""

import colorsys
import functools

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def class_colour(label: int):
    """A distinct, stable RGB colour per class."""
    hue = (label * 0.618033988749895) % 1.0
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 1.0))


def draw_detections(image, boxes, scores, labels, class_names, min_score=0.0):
    """uint8 ``[H, W, 3]`` image with ``boxes`` ``[D, 4]`` (yxyx pixels), their class names and
    scores drawn -> uint8 ``[H, W, 3]``. Labels are 0-based; negative labels (padding) are skipped."""
    canvas = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    draw = ImageDraw.Draw(canvas)
    thickness = max(1, round(min(canvas.size) / 200))
    text_size = max(11, round(min(canvas.size) / 50))
    for box, score, label in zip(np.asarray(boxes), np.asarray(scores), np.asarray(labels)):
        if label < 0 or score < min_score:
            continue
        ymin, xmin, ymax, xmax = [float(v) for v in box]
        colour = class_colour(int(label))
        draw.rectangle([xmin, ymin, xmax, ymax], outline=colour, width=thickness)
        name = class_names[int(label)] if int(label) < len(class_names) else str(int(label))
        text = f"{name} {score:.2f}"
        font = _font(font_file_for(text), text_size)
        left, top, right, bottom = draw.textbbox((xmin, ymin), text, font=font)
        y = max(0.0, ymin - (bottom - top) - 2)
        draw.rectangle([xmin, y, xmin + (right - left) + 4, y + (bottom - top) + 2], fill=colour)
        draw.text((xmin + 2, y), text, fill=(0, 0, 0), font=font)
    return np.asarray(canvas)


def font_file_for(text) -> str:
    """The font file to write ``text`` in: Matplotlib's DejaVu Sans if it has every character, else
    the first of the system's fonts that has (DejaVu Sans again if none has: missing characters
    are then drawn as boxes)."""
    wanted = frozenset(ord(c) for c in text if not c.isspace())
    first = _dejavu_sans()
    if wanted <= _characters(first):
        return first
    return next((path for path in _system_fonts() if wanted <= _characters(path)), first)


@functools.lru_cache(maxsize=None)
def _dejavu_sans() -> str:
    from matplotlib import font_manager

    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans"))


@functools.lru_cache(maxsize=None)
def _system_fonts() -> tuple:
    """The system's font files but DejaVu Sans, sorted (listed once, when a name needs them)."""
    from matplotlib import font_manager

    return tuple(sorted(set(font_manager.findSystemFonts()) - {_dejavu_sans()}))


@functools.lru_cache(maxsize=None)
def _characters(path) -> frozenset:
    """The characters ``path`` has glyphs for (none if it cannot be read)."""
    from matplotlib import ft2font

    try:
        return frozenset(ft2font.FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.lru_cache(maxsize=64)
def _font(path, size):
    try:
        return ImageFont.truetype(path, size)
    except OSError:
        return ImageFont.load_default(size)
