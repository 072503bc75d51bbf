"""Image files checked in Python before they reach a ``tf.data`` graph.

A corrupt, truncated or missing image would otherwise fail inside ``tf.io.decode_image`` deep in a
parallel map, far from the file that caused it. Folder sources call :func:`check_images` while they
list their examples and skip (with a warning naming the file) whatever fails here.

The check reads each file's header with Pillow (its format, among those ``tf.io.decode_image``
reads, and its size, before any pixel is decoded: a decompression bomb is refused unread) and
decodes it: a JPEG with Pillow at 1/8 scale (``Image.draft``: libjpeg still reads every
entropy-coded block, so a truncated file is still caught, at a fraction of the cost of a full
decode), every other format with the pipelines' own decoder, TensorFlow's (GIF, BMP and WebP with
Pillow too), whose refusals inside a ``tf.data`` graph would name no file. A file TensorFlow still
refuses there is found afterwards (:func:`refused_by_tensorflow`).

EXIF orientation (phone photos): TensorFlow decodes the stored pixels and ignores it, while viewers
and browser-based annotation tools show the image turned. Where an annotation states the turned
size (orientations 5-8), its boxes were drawn on the image as shown and the folder sources turn
them onto the stored pixels (:func:`to_stored_frame`); where it cannot be told (orientations 2-4,
a square image, or no stated size), the boxes are taken as stored, with a warning.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import re
import struct
import threading
import typing
import unicodedata
import zlib

import numpy as np
from PIL import Image

# What tf.io.decode_image can decode, and the file name suffixes (any case) taken for images.
# "MPO" is Pillow's name for a JPEG holding further pictures after the photo (the MPF of phone photos
# with a depth map or HDR gain map, of 3D cameras): TensorFlow decodes its first picture, the photo.
TF_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".gif", ".bmp", ".dib", ".webp")
# Image files of formats TensorFlow does not decode: left out of a folder with a warning.
OTHER_IMAGE_SUFFIXES = (".tif", ".tiff", ".heic", ".heif", ".avif", ".jp2", ".dng", ".cr2", ".nef", ".psd")

ORIENTATION_TAG = 0x0112  # EXIF Orientation: how a viewer turns the stored pixels to show them

# The largest image read: tf.io.decode_jpeg refuses more than 2**29 bytes of pixels (178,956,970 RGB
# pixels; a 200-megapixel phone photo is over it), and other formats are held to it too (a
# decompression bomb: a small file stating a huge size). Pillow's decompression-bomb check, which would
# call a 108-megapixel photo a possible attack and anything over this limit corrupt, is not applied.
MAX_PIXELS = 2 ** 29 // 3
_PILLOW_LIMIT = threading.Lock()  # Image.MAX_IMAGE_PIXELS is one global: changed under this lock only


class CheckedImage(typing.NamedTuple):
    """An image file's stored size (what ``tf.io.decode_image`` gives: it ignores EXIF) and its
    EXIF orientation (1: shown as stored; 2-8: mirrored and / or turned for display)."""

    height: int
    width: int
    orientation: int = 1


def check_image(path) -> CheckedImage:
    """Decode ``path`` (a file's path, or a binary file object: an image held in a TFRecord) -> its
    :class:`CheckedImage`; raises ``ValueError`` saying what is wrong."""
    if not hasattr(path, "read") and not os.path.isfile(path):
        raise ValueError("image file is missing")
    if not hasattr(path, "read") and os.path.getsize(path) == 0:
        raise ValueError("image file is empty (0 bytes: a copy or download that did not finish?)")
    try:
        with _open_without_pillow_limit(path) as image:
            if image.format not in TF_FORMATS:
                raise ValueError(f"image format {image.format} is not one TensorFlow decodes {TF_FORMATS}: "
                                 "convert it to JPEG or PNG")
            width, height = image.size
            if image.format == "BMP" and width >= 2 ** 31:  # (Pillow reads the signed field unsigned)
                raise ValueError(f"image is a BMP whose header states a width of {width - 2 ** 32}: corrupt")
            if width * height > MAX_PIXELS:  # (any format: a PNG of a few kB may state 50,000 x 50,000, 7.5 GB)
                raise ValueError(f"image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), more "
                                 f"than the {MAX_PIXELS / 1e6:.0f} read (TensorFlow's JPEG decoder's limit, kept for "
                                 "every format); scale it down (the model shrinks it to its max_side anyway) or cut "
                                 "it into tiles")
            if image.format == "BMP":
                _check_bmp(path, image.mode)
            if image.format == "GIF":
                _check_gif_pictures(path)
            if image.format == "WEBP" and getattr(image, "n_frames", 1) > 1:
                raise ValueError(f"an animated WebP ({image.n_frames} frames): TensorFlow's WebP decoder corrupts its "
                                 "memory on some (the process dies), so it is not read: save its first frame as PNG "
                                 "or JPEG")
            if image.format == "PNG":  # (Pillow's getexif would decode a PNG's pixels to look for EXIF after them)
                orientation = _png_orientation(_check_png_chunks(path))
            else:
                orientation = image.getexif().get(ORIENTATION_TAG, 1)
            if image.format in ("JPEG", "MPO"):
                _check_jpeg_end(path)
                image.draft(image.mode, (max(width // 8, 1), max(height // 8, 1)))
            if image.format != "PNG":  # (a PNG: TensorFlow's libpng checks its pixels' checksums, below)
                image.load()
            if image.format not in ("JPEG", "MPO"):
                height, width = _decoded_size(path)
    except ValueError:
        raise
    except Exception as error:  # Pillow raises many types (OSError, SyntaxError, ...) for bad files.
        raise ValueError(f"image file is corrupt or unreadable ({type(error).__name__}: {error})") from None
    if width < 1 or height < 1:
        raise ValueError(f"image is empty ({width} x {height})")
    return CheckedImage(height, width, orientation if orientation in range(1, 9) else 1)


# The pixels of all a GIF's pictures together that are read: TensorFlow's decoder (giflib's
# DGifSlurp) holds every picture, a byte a pixel, to give the first; so much is the memory of the
# largest RGB image read (a 3.8 MB GIF of 80 8000 x 8000 pictures took 5.9 GB).
GIF_PIXELS = 3 * MAX_PIXELS


def gif_pictures(data: bytes) -> list:
    """(width, height) of each picture of the GIF ``data`` (its image descriptors, its blocks walked
    to the trailer or the end of the data)."""
    pictures, flags = [], data[10] if len(data) > 10 else 0
    position = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    while position < len(data):
        kind = data[position]
        if kind == 0x2C and position + 10 <= len(data):  # a picture: its size, its colour table, its LZW data
            width, height, flags = struct.unpack_from("<HHB", data, position + 5)
            pictures.append((width, height))
            position += 11 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
        elif kind == 0x21:  # an extension: its label, then its sub-blocks
            position += 2
        else:  # the trailer (0x3B), or bytes no decoder reads on
            break
        while position < len(data) and data[position]:  # sub-blocks: a length byte, then so many bytes
            position += data[position] + 1
        position += 1
    return pictures


def _check_gif_pictures(path):
    """Refuse a GIF whose pictures TensorFlow's decoder would hold beyond the memory of the largest
    image read: a picture larger than :data:`MAX_PIXELS` (Pillow's size is the GIF's screen, which
    a picture may exceed: a 1 x 1 screen with a 30,000 x 30,000 picture took 4.4 GB), or more than
    :data:`GIF_PIXELS` in all its pictures."""
    pictures = gif_pictures(_file_bytes(path))
    largest = max(pictures, key=lambda size: size[0] * size[1], default=(0, 0))
    if largest[0] * largest[1] > MAX_PIXELS:
        raise ValueError(f"a GIF picture of {largest[0]} x {largest[1]} pixels, more than the "
                         f"{MAX_PIXELS / 1e6:.0f} megapixels read; scale it down or save it as PNG or JPEG")
    total = sum(width * height for width, height in pictures)
    if total > GIF_PIXELS:
        raise ValueError(f"a GIF of {len(pictures)} pictures, {total / 1e6:.0f} megapixels in all: TensorFlow's "
                         f"decoder holds them all (a byte a pixel) to give the first; over the {GIF_PIXELS / 1e6:.0f} "
                         "read, save its first picture as PNG or JPEG")


@functools.cache
def _tf_decode():
    """The pipelines' decoder (``examples.decode_image``) as one traced function, for one string."""
    import tensorflow as tf

    from keras_frcnn.data.examples import decode_image

    return tf.function(decode_image, input_signature=[tf.TensorSpec([], tf.string)])


def _decoded_size(path) -> tuple:
    """(height, width) of the image file ``path`` (or binary file object) as the pipelines' decoder
    (``examples.decode_image``) gives it, or ``ValueError`` with TensorFlow's message. Every format
    but JPEG is decoded so: its decoders and Pillow's part ways on files each reads whole (a BMP a
    byte longer than its pixels, as some writers pad it; a stray byte between a GIF's blocks; its
    colour indices past its palette; a GIF's first picture smaller than its screen, Pillow's size)
    in ways no short list of rules covers. A JPEG, checked at 1/8 scale for speed, is Pillow's."""
    import tensorflow as tf

    try:
        shape = _tf_decode()(tf.constant(_file_bytes(path))).shape
    except tf.errors.OpError as error:
        from keras_frcnn.cli import describe_tf_error

        raise ValueError(f"image file is corrupt: TensorFlow does not decode it ({describe_tf_error(error)})") from None
    return int(shape[0]), int(shape[1])


def _png_orientation(exif: bytes) -> int:
    """The EXIF orientation of a PNG's eXIf chunk's data (1 without one)."""
    if not exif:
        return 1
    tags = Image.Exif()
    tags.load(exif)
    return tags.get(ORIENTATION_TAG, 1)


def _open_without_pillow_limit(path):
    """``Image.open(path)`` without Pillow's decompression-bomb warning and error (the size is
    checked against :data:`MAX_PIXELS` instead)."""
    with _PILLOW_LIMIT:
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit


# BI_BITFIELDS' red, green and blue masks in the order TensorFlow's BMP decoder reads the bytes.
_BMP_BGR_MASKS = struct.pack("<III", 0x00FF0000, 0x0000FF00, 0x000000FF)


def _check_bmp(path, mode):
    """Refuse the BMP variants that Pillow reads but ``tf.io.decode_bmp`` does not read right: it
    takes every file as uncompressed 8-bit grey, 24-bit BGR or 32-bit BGRA, so a colour palette
    comes out as grey index values, RLE data as noise, other masks with swapped channels, and 1,
    4 or 16 bits per pixel fail while training."""
    header = _file_bytes(path, 66)
    header_size, = struct.unpack_from("<I", header, 14) if len(header) >= 18 else (0,)
    if header_size < 40 or len(header) < 34:
        raise ValueError(f"BMP with a {header_size}-byte (OS/2) header, which TensorFlow does not decode; "
                         "save it as PNG or JPEG")
    bits, compression = struct.unpack_from("<HI", header, 28)
    if (bits in (24, 32) and compression == 0 or bits == 8 and compression == 0 and mode == "L"
            or bits == 32 and compression == 3 and header[54:66] == _BMP_BGR_MASKS):
        return
    kind = "a colour palette" if mode == "P" else f"compression {compression}" if compression not in (0, 3) \
        else "its channel masks" if compression == 3 else f"{bits}-bit pixels"
    raise ValueError(f"BMP with {kind}, which TensorFlow's decoder reads wrong or not at all; "
                     "save it as PNG or JPEG (or 24-bit BMP)")


def _file_bytes(path, size=-1) -> bytes:
    """The first ``size`` bytes (all: -1) of the file ``path``, a path or a binary file object."""
    if hasattr(path, "read"):
        path.seek(0)
        return path.read(size)
    with open(path, "rb") as f:
        return f.read(size)


def _check_png_chunks(path) -> typing.Optional[bytes]:
    """The data of the PNG's eXIf chunk (None without one); refuses, naming the part, the PNGs
    Pillow decodes but TensorFlow's libpng does not: a checksum error in a
    critical chunk (the pixels' IDAT; Pillow checks those after the first only in ``verify``) or a
    file cut before the end of its IEND chunk (a download or copy cut short: Pillow stops reading
    after the last IDAT). Ancillary chunks' checksum errors pass, as libpng drops such chunks."""
    data, exif = _file_bytes(path), None
    position = 8  # after the signature, which Pillow checked
    while True:
        if position + 12 > len(data):
            raise ValueError(f"PNG file cut short at byte {len(data)} (no complete IEND chunk): "
                             "TensorFlow does not decode it")
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 8 + length
        if end + 4 > len(data):
            raise ValueError(f"PNG file cut short in its {kind.decode('latin-1')!r} chunk at byte {len(data)}: "
                             "TensorFlow does not decode it")
        critical = not kind[0] & 0x20  # an upper-case first letter
        if critical and zlib.crc32(data[position + 4:end]) != struct.unpack_from(">I", data, end)[0]:
            raise ValueError(f"PNG {kind.decode('latin-1')!r} chunk at byte {position} fails its checksum: "
                             "the file is corrupt (TensorFlow does not decode it)")
        if kind == b"eXIf" and exif is None:
            exif = data[position + 8:end]
        if kind == b"IEND":
            return exif
        position = end + 4


# In a JPEG's entropy-coded data a 0xFF byte is followed by 0x00 (a stuffed byte) or a restart marker
# (0xD0-0xD7), or repeats (fill): anything else after it is the next marker.
_JPEG_MARKER_IN_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _check_jpeg_end(path):
    """Refuse a JPEG cut short before its end-of-image marker (EOI) that TensorFlow does not decode:
    as little as those two bytes gone, Pillow decodes the file whole while TensorFlow's decoder
    may stop for want of them ("Invalid JPEG data"). The markers are walked from the start, each
    scan's data skipped to the marker after it, up to the first EOI (what follows it, e.g. an MPO's
    further pictures, is not read); a file without one is decoded by TensorFlow to tell."""
    data = _file_bytes(path)
    position = 2  # after the start-of-image marker, which Pillow checked
    while True:
        position = data.find(b"\xff", position)  # (bytes before a marker are skipped, as libjpeg does)
        while data[position:position + 2] == b"\xff\xff":  # fill bytes before a marker
            position += 1
        if position < 0 or position + 2 > len(data):
            break
        marker = data[position + 1]
        if marker == 0xD9:
            return
        if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD8:  # markers without a length
            position += 2
            continue
        if position + 4 > len(data):
            break
        position += 2 + struct.unpack_from(">H", data, position + 2)[0]
        if marker == 0xDA:  # a scan: its data runs to the next marker
            found = _JPEG_MARKER_IN_SCAN.search(data, position)
            if not found:
                break
            position = found.start()
    import tensorflow as tf

    try:  # (whether the decoder needs the missing bytes depends on where its last scan's data ends)
        tf.io.decode_jpeg(data, channels=3)
    except tf.errors.OpError as error:
        from keras_frcnn.cli import describe_tf_error

        raise ValueError(f"JPEG file cut short (no end-of-image marker after its data, byte {len(data)}): "
                         f"TensorFlow does not decode it ({describe_tf_error(error)})") from None


def shown_size(image: CheckedImage) -> tuple:
    """``(height, width)`` of the image as viewers (and annotation tools in a browser) show it."""
    return (image.width, image.height) if image.orientation >= 5 else (image.height, image.width)


def annotated_as_shown(image: CheckedImage, stated_size) -> bool:
    """Whether boxes given with ``stated_size`` ``(height, width)`` were drawn on the image as shown
    (EXIF applied) rather than as stored: decidable only where the orientation turns the image by
    90 degrees (5-8) and the stated size is the turned one."""
    return (image.orientation >= 5 and image.height != image.width
            and tuple(stated_size) == shown_size(image))


def frame_undecided(image: CheckedImage, stated_size) -> bool:
    """Whether the frame of an image's boxes is left in doubt by its EXIF orientation, once
    ``annotated_as_shown`` is false and the stated ``(height, width)`` (None: none given) is not
    another size: told (as stored) only where the orientation turns the image by 90 degrees and the
    stated size is the stored one, which a square image's turned size equals as well."""
    return image.orientation != 1 and (stated_size is None or image.orientation < 5 or image.height == image.width)


def exif_undecided(image: CheckedImage) -> str:
    """The warning for an EXIF orientation whose annotations' frame cannot be told."""
    return (f"EXIF orientation {image.orientation}: viewers show this image "
            + ("mirrored or turned" if image.orientation < 5 else "turned by 90 degrees")
            + "; its boxes are read as drawn on the stored pixels (as TensorFlow decodes it), which "
            "the annotation's stated size cannot confirm")


def to_stored_frame(boxes, orientation: int) -> np.ndarray:
    """Normalised ``[ymin, xmin, ymax, xmax]`` boxes on the image as shown -> on the stored pixels.

    EXIF orientation ``o`` shows stored point ``(x, y)`` (normalised) at: 2 ``(1 - x, y)``,
    3 ``(1 - x, 1 - y)``, 4 ``(x, 1 - y)``, 5 ``(y, x)``, 6 ``(1 - y, x)``, 7 ``(1 - y, 1 - x)``,
    8 ``(y, 1 - x)``; this is its inverse, corner by corner.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    y0, x0, y1, x1 = boxes.T
    ys, xs = {  # the stored y and x of each shown corner pair
        1: ((y0, y1), (x0, x1)),
        2: ((y0, y1), (1 - x1, 1 - x0)),
        3: ((1 - y1, 1 - y0), (1 - x1, 1 - x0)),
        4: ((1 - y1, 1 - y0), (x0, x1)),
        5: ((x0, x1), (y0, y1)),
        6: ((1 - x1, 1 - x0), (y0, y1)),
        7: ((1 - x1, 1 - x0), (1 - y1, 1 - y0)),
        8: ((x0, x1), (1 - y1, 1 - y0)),
    }[orientation]
    return np.stack([ys[0], xs[0], ys[1], xs[1]], axis=1)


def as_on_disk(paths) -> tuple:
    """``paths`` with each missing file that is there as written on Windows or macOS replaced by the
    file on disk: folders parted by ``\\`` (``images\\a.jpg``), or the name in other letter case
    (``IMG_1.jpg`` named, ``IMG_1.JPG`` on disk: those file systems ignore case) or in the other
    Unicode form (``é`` one character or ``e`` and its accent: macOS writes names decomposed) where
    exactly one file matches; and the files so found. Each folder of a missing file is listed once."""
    listings, found, replaced = {}, [], []
    for path in paths:
        if not os.path.exists(path):
            portable = path.replace("\\", "/")
            folder, name = os.path.split(portable)
            if os.path.exists(portable):
                matches = [name]
            else:
                if folder not in listings:
                    listings[folder] = _names_in_lower_case(folder or ".")
                matches = listings[folder].get(folded(name), [])
            if len(matches) == 1:
                path = os.path.join(folder, matches[0])
                replaced.append(path)
        found.append(path)
    return found, replaced


def image_problem(path) -> str:
    """How a failed check of the image file ``path`` is counted: "missing image file" where no file
    is there (a wrong folder or name), else "bad image file"."""
    return "bad image file" if os.path.exists(path) else "missing image file"


def path_tails(path) -> list:
    """An absolute path as another machine wrote it (``C:\\Users\\me\\set\\a.jpg``, a notebook's
    ``/content/drive/MyDrive/set/a.jpg``) -> its last folders and name, longest first
    (``Users/me/set/a.jpg`` ... ``a.jpg``), to look for under this machine's folders; a relative
    path -> ``[]``."""
    portable = str(path).replace("\\", "/")
    if not re.match(r"^(/|[A-Za-z]:/)", portable):
        return []
    parts = [part for part in portable.split("/") if part and not part.endswith(":")]
    return ["/".join(parts[start:]) for start in range(1, len(parts))]


def folded(name) -> str:
    """A file name as Windows and macOS compare names: in lower case, accents as one character each
    (Unicode NFC)."""
    return unicodedata.normalize("NFC", name).lower()


def _names_in_lower_case(folder) -> dict:
    names = {}
    with contextlib.suppress(OSError):  # (no such folder: nothing found there)
        for entry in os.listdir(folder):
            names.setdefault(folded(entry), []).append(entry)
    return names


# Checks of at least this many files (or records) say so first: ~1 ms each on two cores.
LONG_CHECK = 10_000
# Files checked between writes to the cache (a few seconds of checks on 2 cores).
CHECK_CHUNK = 2_000


def check_images(paths, max_workers=None, cache=True) -> list:
    """:func:`check_image` over ``paths`` in threads (Pillow decodes without the GIL).

    Returns one entry per path: its :class:`CheckedImage` or the ``ValueError`` it raised.
    ``cache``: results are kept per file (its real path, size and modification time) in
    :func:`cache_path`, so a file checked once is not decoded again by the next run, ``--resume``
    or evaluation (COCO's 118k images: 83 s of checks on 2 cores, then a stat each). A cache that
    cannot be read or written is passed over.
    """

    def one(path):
        try:
            return check_image(path)
        except ValueError as error:
            return error

    keys = [file_key(path) for path in paths]
    known = _ImageCheckCache.read([key for key in keys if key]) if cache else {}
    todo = [i for i, key in enumerate(keys) if key not in known]
    if len(todo) >= LONG_CHECK:  # a minute or more of silence otherwise
        from keras_frcnn.data.problems import logger

        logger.warning("checking %d images (%s), once: the results are remembered in %s", len(todo),
                       os.path.dirname(paths[todo[0]]) or ".", cache_path() if cache else "no cache")
    workers = max_workers or min(32, (os.cpu_count() or 1) + 4)
    checked = {}
    for part, results in chunked_map(lambda i: one(paths[i]), todo, CHECK_CHUNK, workers):
        checked.update(zip(part, results, strict=True))
        if cache:  # (as it goes: a check killed or interrupted part way keeps what it did)
            _ImageCheckCache.write({keys[i]: result for i, result in zip(part, results) if keys[i]})
    return [checked[i] if i in checked else known[key] for i, key in enumerate(keys)]


# The image files of the folder sources made in this process (``examples.records_to_source``; a
# command clears it as it starts): what a command decodes again with TensorFlow to name the file its
# decoder refused inside a tf.data graph, whose error names none (see :func:`refused_by_tensorflow`).
FILES_READ = set()


def refused_by_tensorflow(paths, max_workers=None) -> tuple:
    """The files of ``paths`` that the pipelines' decoder (``examples.decode_image``) refuses:
    ``(path, TensorFlow's message)`` each, in the order of ``paths``; and whether each of them is
    now remembered in the check cache (:func:`cache_path`) as a bad image file, which the next run's
    check skips with a counted warning like any other.

    For a file :func:`check_image` passed and TensorFlow still refused inside a ``tf.data`` graph
    (a way the two decoders differ that the check does not know): that error names no file, so a
    command that meets it decodes the files it read with TensorFlow to find it (3.1 ms a 640 x 480
    JPEG on two cores: COCO's 118k images in ~6 minutes, once)."""
    import tensorflow as tf

    refused = decoding_errors(((path, tf.io.read_file(os.fsencode(path))) for path in paths), max_workers)
    keys = {file_key(path): ValueError(f"TensorFlow does not decode it ({told})") for path, told in refused}
    keys.pop(None, None)  # (a file gone since: not remembered)
    _ImageCheckCache.write(keys)
    remembered = bool(refused) and len(_ImageCheckCache.read(list(keys))) == len(refused)
    return refused, remembered


def decoding_errors(items, max_workers=None) -> list:
    """``(name, TensorFlow's message)`` of each ``(name, encoded image)`` of ``items`` (an iterable,
    read as it goes) that the pipelines' decoder (``examples.decode_image``) refuses, in order;
    decoded in threads."""
    import tensorflow as tf

    from keras_frcnn.cli import describe_tf_error

    def one(item):
        try:
            _tf_decode()(item[1])
        except tf.errors.OpError as error:
            return item[0], describe_tf_error(error)
        return None

    # (256 at a time: the items of a large set are not all held)
    return [found for _, results in chunked_map(one, items, 256, max_workers or (os.cpu_count() or 1))
            for found in results if found is not None]


def chunked_map(fn, items, size, workers):
    """Yield ``(chunk, [fn(item) for item in chunk])`` for each ``size`` items of the iterable
    ``items`` in turn, ``fn`` run in ``workers`` threads; Ctrl-C (or any exception) does not wait
    for the items not yet begun."""
    import itertools

    items = iter(items)
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        while chunk := list(itertools.islice(items, size)):
            yield chunk, list(pool.map(fn, chunk))
    finally:
        pool.shutdown(cancel_futures=True)


def cache_path() -> str:
    """The image-check cache: ``$KERAS_FRCNN_CACHE``, else ``$XDG_CACHE_HOME/keras_frcnn`` (default
    ``~/.cache/keras_frcnn``), file ``image_checks.sqlite3``."""
    folder = os.environ.get("KERAS_FRCNN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "keras_frcnn")
    return os.path.join(folder, "image_checks.sqlite3")


def file_key(path):
    """(real path, size, modification time in ns) of a file, or None if it is not there (a gs://,
    s3:// ... path through tf.io.gfile)."""
    if "://" in os.fspath(path):
        import tensorflow as tf

        try:
            stat = tf.io.gfile.stat(path)
        except tf.errors.OpError:
            return None
        return os.fspath(path), stat.length, stat.mtime_nsec
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), stat.st_size, stat.st_mtime_ns


def stored_path(path):
    """A cache row's path: the str, or its bytes where the name is not UTF-8 (a Latin-1 name on
    Linux: SQLite's text is UTF-8 and refuses it); ``os.fsdecode`` turns a row's bytes back."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


# Rows a cache table keeps: the newest written (~165 bytes an image check; Objects365's 1.8M
# images fit). Older rows, e.g. of files since deleted or extracted again elsewhere (a cluster job's
# scratch copy of COCO adds 118k rows), go: a file met again is checked again.
CACHE_ROWS = 2_000_000


def trim_cache(connection, table: str):
    """Remove the rows of ``table`` written before its newest :data:`CACHE_ROWS` (a row written,
    also over an older one, takes the next rowid)."""
    connection.execute(f"DELETE FROM {table} WHERE rowid <= (SELECT MAX(rowid) FROM {table}) - ?", [CACHE_ROWS])


def connect_cache(table: str, columns: str, rules: int):
    """(a connection to the check cache (:func:`cache_path`) with ``table`` of rows keyed by a
    file's real path, size and modification time and the rules they were made by, then
    ``columns``; the rules key of this version: ``rules`` and Pillow's version)."""
    import sqlite3

    import PIL

    path = cache_path()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    connection = sqlite3.connect(path, timeout=60)
    connection.execute(f"CREATE TABLE IF NOT EXISTS {table} (path TEXT, size INTEGER, mtime INTEGER, rules TEXT, "
                       f"{columns}, PRIMARY KEY (path, size, mtime, rules))")
    return connection, f"{rules}/{PIL.__version__}"


class _ImageCheckCache:
    """SQLite (safe between processes) rows of a file key -> its check's result, for this version
    of the rules (``RULES``) and of Pillow."""

    RULES = 6  # bump when check_image's rules change: older rows are then ignored

    @classmethod
    def _connect(cls):
        return connect_cache("checks", "height INTEGER, width INTEGER, orientation INTEGER, error TEXT", cls.RULES)

    @classmethod
    def read(cls, keys) -> dict:
        import sqlite3

        found = {}
        try:
            connection, rules = cls._connect()
            with contextlib.closing(connection):
                wanted = set(keys)
                for chunk in range(0, len(keys), 500):
                    paths = [stored_path(key[0]) for key in keys[chunk:chunk + 500]]
                    rows = connection.execute(
                        f"SELECT path, size, mtime, height, width, orientation, error FROM checks WHERE rules = ? "
                        f"AND path IN ({', '.join('?' * len(paths))})", [rules, *paths])
                    for path, size, mtime, height, width, orientation, error in rows:
                        path = os.fsdecode(path)  # (a name stored as bytes: back to the str of its key)
                        if (path, size, mtime) in wanted:
                            found[path, size, mtime] = ValueError(error) if error is not None else \
                                CheckedImage(height, width, orientation)
        except (sqlite3.Error, OSError):
            return {}
        return found

    @classmethod
    def write(cls, results):
        import sqlite3

        if not results:
            return
        try:
            connection, rules = cls._connect()
            with contextlib.closing(connection), connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO checks VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(stored_path(path), size, mtime, rules, None, None, None, str(result))
                     if isinstance(result, Exception) else (stored_path(path), size, mtime, rules, *result, None)
                     for (path, size, mtime), result in results.items()])
                trim_cache(connection, "checks")
        except (sqlite3.Error, OSError):
            pass
