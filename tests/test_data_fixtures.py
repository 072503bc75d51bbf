"""Helpers for the data tests: tiny VOC folders and COCO files written into a temporary directory.

(No tests here; the ``test_data_`` prefix keeps it among the data test files.)
"""

import json
import os

import numpy as np
from PIL import Image, ImageOps


def write_image(path, height, width, mode="RGB", seed=0, fmt=None):
    """A small random image file; returns its pixels as uint8 ``[H, W, C]``."""
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1, "RGBA": 4}[mode]
    pixels = rng.integers(0, 256, size=(height, width, channels), dtype=np.uint8)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, format=fmt)
    return pixels


def write_turned_photo(path, orientation, stored=(60, 100), rect=(10, 60, 25, 90)):
    """A JPEG of ``stored`` (h, w) pixels, white inside ``rect`` (continuous ``yxyx``) and black
    elsewhere, tagged with EXIF ``orientation``. Returns what a viewer shows (Pillow's
    ``exif_transpose``, independent of the code under test): ``(height, width)`` and the white
    pixels' first and last row and column ``(r0, c0, r1, c1)``."""
    pixels = np.zeros((*stored, 3), np.uint8)
    pixels[rect[0]:rect[2], rect[1]:rect[3]] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = orientation
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, exif=exif, quality=100)
    with Image.open(path) as saved:
        shown = np.asarray(ImageOps.exif_transpose(saved))[..., 0] > 128
    rows, cols = np.nonzero(shown)
    return shown.shape, (rows.min(), cols.min(), rows.max(), cols.max())


def voc_xml(filename, width, height, objects, extra=""):
    """VOC annotation XML; ``objects`` are ``(name, (xmin, ymin, xmax, ymax), difficult)``."""
    parts = [f"<annotation><folder>VOC2007</folder><filename>{filename}</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size>", extra]
    for name, (xmin, ymin, xmax, ymax), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
            f"<difficult>{int(difficult)}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
            f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    parts.append("</annotation>")
    return "".join(parts)


def write_voc_folder(root, entries, splits):
    """A VOC folder under ``root``.

    entries: image id -> dict with optional keys ``size`` (h, w), ``objects``, ``image`` (False: no
      image file; bytes: raw file content; "L" / "RGBA": that PIL mode), ``xml`` (a string replaces
      the generated XML; False: no XML file), ``xml_size`` (w, h written in <size>), ``ext``.
    splits: split name -> list of ids.
    """
    root = str(root)
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    pixels = {}
    for number, (image_id, entry) in enumerate(entries.items()):
        height, width = entry.get("size", (60, 80))
        ext = entry.get("ext", ".jpg")
        image_path = os.path.join(root, "JPEGImages", image_id + ext)
        image = entry.get("image", "RGB")
        if isinstance(image, bytes):
            with open(image_path, "wb") as f:
                f.write(image)
        elif image:
            pixels[image_id] = write_image(image_path, height, width, mode=image, seed=number)
        xml = entry.get("xml")
        if xml is None:
            xml_width, xml_height = entry.get("xml_size", (width, height))
            xml = voc_xml(image_id + ext, xml_width, xml_height, entry.get("objects", []))
        if xml is not False:
            with open(os.path.join(root, "Annotations", image_id + ".xml"), "w") as f:
                f.write(xml)
    for split, ids in splits.items():
        with open(os.path.join(root, "ImageSets", "Main", split + ".txt"), "w") as f:
            f.write("".join(i + "\n" for i in ids))
    return pixels


def write_coco(root, images, annotations, categories, json_text=None):
    """A COCO instances file ``root/instances.json`` and images in ``root/images``.

    images: dicts with ``id``, ``file_name``, ``size`` (h, w) and optional ``image`` (False: no
    file; bytes: raw content); written to the JSON without ``size`` / ``image``.
    """
    root = str(root)
    image_dir = os.path.join(root, "images")
    os.makedirs(image_dir, exist_ok=True)
    entries = []
    for number, image in enumerate(images):
        height, width = image["size"]
        path = os.path.join(image_dir, image["file_name"])
        content = image.get("image", True)
        if isinstance(content, bytes):
            with open(path, "wb") as f:
                f.write(content)
        elif content:
            write_image(path, height, width, seed=number)
        entry = {k: v for k, v in image.items() if k not in ("size", "image")}
        entry.setdefault("height", height)
        entry.setdefault("width", width)
        entries.append(entry)
    json_path = os.path.join(root, "instances.json")
    with open(json_path, "w") as f:
        f.write(json_text if json_text is not None else json.dumps(
            {"images": entries, "annotations": annotations, "categories": categories}))
    return json_path, image_dir


def examples(source):
    """All examples of a source as numpy dicts (flattened ``objects/...`` keys)."""
    out = []
    for example in source.dataset.as_numpy_iterator():
        flat = {k: v for k, v in example.items() if k != "objects"}
        flat.update({f"objects/{k}": v for k, v in example["objects"].items()})
        out.append(flat)
    return out


def write_yolo(root, splits, names, layout="ultralytics", yaml_text=None):
    """A YOLO data set under ``root``; returns its ``data.yaml``.

    splits: split key ("train", "val", ...) -> image name -> label lines (a list of strings; None:
      no label file), each image 60 x 80.
    layout: "ultralytics" (``images/<split>/``, ``labels/<split>/``, ``path: .``) or "roboflow"
      (``<split>/images/``, ``<split>/labels/``, paths "../train/images" and names as a list).
    """
    root = str(root)
    entries = {}
    for number, (key, images) in enumerate(splits.items()):
        folder = {"ultralytics": f"images/{key}", "roboflow": f"{'valid' if key == 'val' else key}/images"}[layout]
        entries[key] = folder
        for offset, (name, lines) in enumerate(images.items()):
            write_image(os.path.join(root, folder, name + ".jpg"), 60, 80, seed=100 * number + offset)
            if lines is not None:
                label = os.path.join(root, folder.replace("images", "labels"), name + ".txt")
                os.makedirs(os.path.dirname(label), exist_ok=True)
                with open(label, "w") as f:
                    f.write("".join(line + "\n" for line in lines))
    if yaml_text is None:
        if layout == "ultralytics":
            yaml_text = "path: .\n" + "".join(f"{k}: {v}\n" for k, v in entries.items()) + "names:\n" + \
                "".join(f"  {i}: {name}\n" for i, name in enumerate(names))
        else:
            yaml_text = "".join(f"{k}: ../{v}\n" for k, v in entries.items()) + \
                f"nc: {len(names)}\nnames: {json.dumps(list(names))}\n"
    path = os.path.join(root, "data.yaml")
    with open(path, "w") as f:
        f.write(yaml_text)
    return path


def tf_example(name, boxes=(), texts=None, ids=None, size=(60, 80), seed=0, fmt="PNG", encoded=None, **extra):
    """A serialized ``tf.train.Example`` in the TF Object Detection API's layout: an image of
    ``size`` (h, w), ``boxes`` normalised ``yxyx``, class ``texts`` and / or ``ids``; ``extra``:
    further features by key with ``/`` written ``__`` (``image__object__difficult=[1]``), a list of
    ints, floats or bytes."""
    import io

    import tensorflow as tf

    if encoded is None:
        pixels = np.random.default_rng(seed).integers(0, 256, size=(*size, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        encoded = buffer.getvalue()

    def feature(values):
        values = list(values)
        if values and isinstance(values[0], bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
        if values and isinstance(values[0], float):
            return tf.train.Feature(float_list=tf.train.FloatList(value=values))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    features = {"image/encoded": feature([encoded]), "image/filename": feature([name.encode()]),
                "image/source_id": feature([name.encode()]), "image/height": feature([size[0]]),
                "image/width": feature([size[1]])}
    for column, key in enumerate(("ymin", "xmin", "ymax", "xmax")):
        features[f"image/object/bbox/{key}"] = tf.train.Feature(
            float_list=tf.train.FloatList(value=boxes[:, column].tolist()))
    if texts is not None:
        features["image/object/class/text"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[t.encode() for t in texts]))
    if ids is not None:
        features["image/object/class/label"] = tf.train.Feature(int64_list=tf.train.Int64List(value=list(ids)))
    for key, values in extra.items():
        features[key.replace("__", "/")] = feature(values)
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def write_records(path, records, compression=None):
    """Serialized records into a TFRecord file (``compression``: None or "GZIP"); returns its path."""
    import tensorflow as tf

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(str(path), options=compression) as writer:
        for record in records:
            writer.write(record)
    return str(path)


LABEL_MAP = 'item {\n  id: 1\n  name: "cat"\n}\nitem {\n  name: "dog"\n  id: 3\n  display_name: "Dog"\n}\n'


def gif_stating(pictures, screen=(1, 1)) -> bytes:
    """A small GIF whose pictures state the (width, height) sizes ``pictures`` on a ``screen``,
    each of one LZW code (a memory bomb's shape: a decoder holds every picture it states)."""
    import struct

    data = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    for width, height in pictures:
        data += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return data + b"\x3b"
