"""Bad data: counted warnings that name the file, or a clear error that names it.

Folder sources (a VOC directory, a COCO JSON file) check everything in Python while they list
their examples, so nothing malformed ever reaches a ``tf.data`` graph. Each problem is logged once
(on the ``keras_frcnn.data`` logger) with the file it comes from, counted by kind, and summed up in
one line when the listing is done. ``strict=True`` turns the first problem into a
:class:`DataError` instead. Some problems are always errors: a missing directory, an unreadable
JSON file, an XML file that tries entity expansion.
"""

from __future__ import annotations

import collections
import logging
import os

logger = logging.getLogger("keras_frcnn.data")
_said = set()  # warn_once's texts


def warn_once(message, *args) -> None:
    """``logger.warning``, once a process for one text: about a folder as a whole, which its splits
    each read again (train.py reads a folder's training and evaluation splits)."""
    text = message % args
    if text not in _said:
        _said.add(text)
        logger.warning(text)

# After this many messages of one kind only the summary counts them, so that a data set with
# thousands of clipped boxes does not bury the log.
MAX_MESSAGES_PER_KIND = 20


class DataError(ValueError):
    """A data file cannot be used; the message names the file."""


class DataProblems:
    """Collects the problems of one listing (e.g. one split of one VOC folder).

    ``warn(kind, path, message, action)`` logs ``"<path>: <message>; <action>"`` and counts
    ``kind`` (or, when strict, raises ``DataError("<path>: <message>")``);
    ``counts`` maps kind -> count; ``summary()`` logs one line with the totals, or raises
    ``DataError`` when no example is left.
    """

    def __init__(self, source: str, strict: bool = False):
        self.source = source
        self.strict = strict
        self.counts: collections.Counter = collections.Counter()
        self.first: dict = {}  # kind -> its first message

    def warn(self, kind: str, path, message: str, action: str = "") -> None:
        text = f"{os.fspath(path)}: {message}"
        if self.strict:
            raise DataError(text)
        self.first.setdefault(kind, text)
        if action:
            text = f"{text}; {action}"
        self.counts[kind] += 1
        if self.counts[kind] <= MAX_MESSAGES_PER_KIND:
            logger.warning(text)
        elif self.counts[kind] == MAX_MESSAGES_PER_KIND + 1:
            logger.warning("%s: more '%s' problems; only counted from here on", self.source, kind)

    def summary(self, num_examples: int, hint: str = "") -> str:
        """Logs the totals of a listing that gave ``num_examples`` examples; none is a
        ``DataError`` saying why (each kind of problem with its first message) and ``hint``."""
        if not num_examples:
            why = "; ".join(f"{count} {kind}, e.g. {self.first[kind]}" for kind, count in sorted(self.counts.items()))
            raise DataError(f"{self.source}: no usable example" + (f" ({why})" if why else " listed")
                            + (f"; {hint}" if hint else ""))
        if self.counts:
            details = ", ".join(f"{count} {kind}" for kind, count in sorted(self.counts.items()))
            text = f"{self.source}: {num_examples} examples; problems: {details}"
            logger.warning(text)
        else:
            text = f"{self.source}: {num_examples} examples, no problems"
            logger.info(text)
        return text


def read_json(path):
    """A JSON file as annotation tools write it (a byte-order mark passed over); ``ValueError``
    saying what is wrong where it cannot be read, is not a regular file (a FIFO would block), is
    not JSON, nests too deeply, or gives one key twice in an object (JSON readers keep the last
    and lose the others without a word)."""
    import json

    def distinct_keys(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"the key {key[:60]!r} twice in one object (the first would be lost)")
            seen.add(key)
        return dict(pairs)

    if not os.path.isfile(path):
        raise ValueError("not a regular file")
    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f, object_pairs_hook=distinct_keys)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not JSON ({type(error).__name__}: {error})") from None
    except RecursionError:
        raise ValueError("not JSON a reader can take (nested too deeply)") from None


def ellipse_extent(cx, cy, rx, ry, theta=0.0) -> tuple:
    """(xmin, ymin, xmax, ymax) around an ellipse of radii ``rx``, ``ry`` turned by ``theta``
    radians about its centre."""
    import math

    dx = math.hypot(rx * math.cos(theta), ry * math.sin(theta))
    dy = math.hypot(rx * math.sin(theta), ry * math.cos(theta))
    return cx - dx, cy - dy, cx + dx, cy + dy


def finite_box(box, what) -> tuple:
    """``box`` as floats, or ``ValueError`` naming ``what`` where a coordinate is NaN or infinite."""
    import math

    box = tuple(float(v) for v in box)
    if not all(math.isfinite(v) for v in box):
        raise ValueError(f"{what} with coordinates that are not finite")
    return box


def merge_groups(shapes) -> list:
    """Annotation tools' objects drawn in parts (LabelMe's and CVAT's ``group_id``): ``shapes``
    ``[(group_id or None, where, what, box xyxy, label, difficult)]`` -> ``[[where, what, box, label,
    difficult]]``, one per shape or per (label, group_id): the box around its parts, difficult if
    any part is, in the place of its first part (as labelme2coco and CVAT's COCO export make them)."""
    objects, grouped = [], {}
    for group, where, what, box, label, hard in shapes:
        key = None if group is None else (label, group)
        if key in grouped:
            parts = objects[grouped[key]]
            parts[2] = (min(parts[2][0], box[0]), min(parts[2][1], box[1]),
                        max(parts[2][2], box[2]), max(parts[2][3], box[3]))
            parts[1], parts[4] = f"the shapes of group_id {group}", parts[4] or hard
            continue
        if key is not None:
            grouped[key] = len(objects)
        objects.append([where, what, box, label, hard])
    return objects


def box_in_image(box, height, width, problems: DataProblems, where, what, slack=1.0):
    """``box`` (xmin, ymin, xmax, ymax) in the frame of a ``height`` x ``width`` image -> its
    normalised ``(ymin, xmin, ymax, xmax)`` clipped to the image, or None: a box of no width or
    height, or none inside the image, is skipped; one reaching out by more than ``slack`` is
    clipped; both warned in ``problems`` at ``where``, ``what`` naming the box."""
    xmin, ymin, xmax, ymax = box
    if xmax <= xmin or ymax <= ymin:
        problems.warn("degenerate box", where, f"{what} has its corners the wrong way round (max below min)"
                      if xmax < xmin or ymax < ymin else f"{what} has no width or height", "object skipped")
        return None
    clipped = (min(max(xmin, 0.0), width), min(max(ymin, 0.0), height), min(max(xmax, 0.0), width),
               min(max(ymax, 0.0), height))
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        problems.warn("box outside the image", where, f"{what} lies outside the {width:g} x {height:g} image",
                      "object skipped")
        return None
    if max(abs(a - b) for a, b in zip(clipped, box)) > slack:
        problems.warn("box clipped", where, f"{what} reaches outside the {width:g} x {height:g} image", "clipped to it")
    return clipped[1] / height, clipped[0] / width, clipped[3] / height, clipped[2] / width
