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
