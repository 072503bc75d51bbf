"""Detect objects in image files and write PNGs with the boxes, class names and scores drawn, and
the detections as data in ``detections.json``.

    python -m keras_frcnn.predict --model runs/shapes/model.keras IMAGE [IMAGE ...] --out DIR

``--model`` also takes an exported artifact, run in its own runtime: a SavedModel version folder
(``exported/shapes/1``), ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO) or ``.tflite`` (LiteRT).

A folder stands for its image files (JPEG, PNG, BMP, GIF, WebP; not its subfolders). Each image's
PNG is named after it (``photo.jpg`` -> ``photo.png``; ``photo_2.png`` for a second image of that
name). An unreadable image is reported on stderr (naming the file and what is wrong) and skipped;
the others are still done; the exit status is 1 if any image failed.

``DIR/detections.json`` lists every image done, in order (also when stopped by Ctrl-C, ``kill`` or
an error: the images done so far): ``{"image": its path, "drawing": its PNG,
"height", "width", "detections": [{"class": name, "label": 0-based class, "score": probability,
"box": [xmin, ymin, xmax, ymax]}, ...]}`` with the detections at ``--min-score`` or above, boxes in
pixels of the image as decoded (continuous: a box of the whole image is ``[0, 0, width, height]``).

``--labels voc`` / ``yolo`` / ``labelme`` also write those detections as labels an annotation tool
opens, to correct rather than draw (model-assisted labelling): ``DIR/annotations/<name>.xml`` in
Pascal VOC as LabelImg writes it (1-based pixel numbers; CVAT and Label Studio import it too, but
show a photo with an EXIF orientation turned, where these stored-pixel boxes are not: use ``yolo``
or ``labelme`` for such photos there),
``DIR/labels/<name>.txt`` in the YOLO format with ``DIR/classes.txt``, or ``DIR/labelme/<name>.json``
as LabelMe saves it (rectangles; ``imagePath`` relative to the JSON file, so LabelMe opens the image
where it is; no ``imageData``) with ``DIR/labelme/labels.txt``. All read back through this package's
own loaders as the same boxes (to the pixel; the YOLO format to its six decimals). Boxes are on the
image as TensorFlow decodes it (its stored pixels; EXIF orientation not applied, as LabelImg shows
it), YOLO's and LabelMe's turned onto the image as shown (EXIF orientation applied, as Ultralytics
reads and LabelMe shows every image).
"""

from __future__ import annotations

import argparse
import os
import re
import sys

from keras_frcnn import cli


def image_paths(paths, warn=None) -> list:
    """``paths`` with each folder replaced by its image files, sorted by name (not its subfolders'),
    a file given twice once; ``warn`` (a function of one line) is told of what a folder holds that
    is left out: image files of formats TensorFlow does not decode (TIFF, HEIC, ...), links to
    no file, subfolders of images."""
    from keras_frcnn.data.image_files import IMAGE_SUFFIXES, OTHER_IMAGE_SUFFIXES

    warn = warn or (lambda message: None)
    found = []
    for path in paths:
        if not os.path.isdir(path):
            found.append(path)
            continue
        entries = sorted(os.listdir(path))
        names = [name for name in entries if os.path.isfile(os.path.join(path, name))]
        found += [os.path.join(path, name) for name in names if name.lower().endswith(IMAGE_SUFFIXES)]
        others = [name for name in names if name.lower().endswith(OTHER_IMAGE_SUFFIXES)]
        unnamed = [name for name in names if "." not in name and _starts_as_image(os.path.join(path, name))]
        if unnamed:
            warn(f"warning: {path}: {len(unnamed)} image file(s) without a suffix left out (e.g. {unnamed[0]}): "
                 "give them by name, or name them .jpg / .png")
        if others:
            warn(f"warning: {path}: {len(others)} image file(s) of formats TensorFlow does not decode left out "
                 f"(e.g. {others[0]}): convert them to JPEG or PNG")
        dangling = [name for name in entries if name.lower().endswith(IMAGE_SUFFIXES)
                    and os.path.islink(os.path.join(path, name)) and not os.path.exists(os.path.join(path, name))]
        if dangling:
            warn(f"warning: {path}: {len(dangling)} link(s) to no file left out (e.g. {dangling[0]})")
        folders = [name for name in entries if not name.startswith(".") and os.path.isdir(os.path.join(path, name))
                   and _holds_images(os.path.join(path, name))]
        if folders:
            warn(f"warning: {path}: {len(folders)} subfolder(s) of images not read (e.g. {folders[0]}/): give "
                 "them too to detect in them")
    seen, once = set(), []
    for path in found:
        key = os.path.realpath(path) if os.path.exists(path) else path
        if key not in seen:
            seen.add(key)
            once.append(path)
    if len(once) < len(found):
        warn(f"warning: {len(found) - len(once)} image file(s) given twice (as themselves or in a folder given): "
             "each read once")
    return once


def _starts_as_image(path) -> bool:
    """Whether a file begins as a JPEG, PNG, GIF, BMP or WebP does."""
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except OSError:
        return False
    return head.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")) or head[:4] == b"RIFF" and head[8:] == b"WEBP"


def _holds_images(folder) -> bool:
    from keras_frcnn.data.image_files import IMAGE_SUFFIXES

    try:
        return any(name.lower().endswith(IMAGE_SUFFIXES) for name in os.listdir(folder))
    except OSError:
        return False


def read_image(path):
    """uint8 ``[H, W, 3]`` of an image file (JPEG, PNG, BMP, GIF: first frame, WebP), or
    ValueError naming the file and what is wrong with it (the folder sources' check)."""
    import tensorflow as tf

    from keras_frcnn.data.examples import decode_image
    from keras_frcnn.data.image_files import check_image

    try:
        check_image(path)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    try:  # (a file Pillow reads and TensorFlow's decoder does not: that file alone fails)
        return decode_image(tf.io.read_file(os.fsencode(path))).numpy()  # (bytes: a name that is not UTF-8)
    except tf.errors.InvalidArgumentError as error:
        told = re.sub(r"^\{\{.*?\}\}\s*|\s*\[Op:\w+\].*$", "", error.message.strip().splitlines()[0])
        raise ValueError(f"{path}: TensorFlow cannot decode it ({told})") from None


def _one_graph(model):
    """A Keras model's call as one TensorFlow graph for images of any size (on the shapes model
    ~5x faster a file than calling it eagerly); an exported model's runtime as it is."""
    import keras
    import tensorflow as tf

    if not isinstance(model, keras.Model):
        return model
    return tf.function(model, input_signature=[tf.TensorSpec([1, None, None, 3], tf.uint8)])


def predict_files(model, paths, out_dir, min_score=0.3, log=print, warn=None, labels=None):
    """Write ``out_dir/<name>.png`` for every readable image of ``paths`` and ``out_dir/detections.json``,
    and with ``labels`` ("voc", "yolo" or "labelme") each image's labels (see the module's docstring); returns
    (written, failed)."""
    import contextlib

    from keras_frcnn.files import write_atomically

    warn = warn or (lambda message: print(message, file=sys.stderr))
    if labels:
        _check_label_names(model.class_names, labels)
    os.makedirs(out_dir, exist_ok=True)
    detect = _one_graph(model)
    inputs = image_paths(paths)
    # Drawings are named after their images, never over one of them (--out the images' own folder).
    failed, taken, listed, labelled = [], {os.path.realpath(path) for path in inputs}, [], set()
    if labels in ("yolo", "labelme"):
        lists = os.path.join(out_dir, *(("labelme", "labels.txt") if labels == "labelme" else ("classes.txt",)))
        os.makedirs(os.path.dirname(lists), exist_ok=True)
        write_atomically(lists, "".join(f"{name}\n" for name in model.class_names))

    def save_listing():  # (this run's, empty too: an earlier run's listing in out_dir is not this one's)
        write_atomically(os.path.join(out_dir, "detections.json"), _json_text(listed, indent=1))

    try:  # (stopped by Ctrl-C, kill or an error: the images done so far are listed)
        for path in inputs:
            try:
                image = read_image(path)
            except ValueError as error:
                warn(f"error: {error}")
                failed.append(path)
                continue
            record = _detect_and_draw(detect, model.class_names, image, path, _drawing(out_dir, path, taken),
                                      min_score)
            log(f"{path}: {len(record['detections'])} detections >= {min_score:g} "
                + ", ".join(f"{d['class']} {d['score']:.2f}" for d in record["detections"][:10])
                + f" -> {record['drawing']}")
            if labels:
                _write_labels(record, labels, out_dir, model.class_names, labelled, warn)
            listed.append(record)
    except BaseException:
        with contextlib.suppress(OSError):  # (a full disk: the error of the drawing is the one told)
            save_listing()
        raise
    save_listing()
    return [record["drawing"] for record in listed], failed


def _drawing(out_dir, path, taken) -> str:
    """The PNG of image ``path``: named after it, numbered where a name is ``taken`` already (real
    paths: a/x.jpg and b/x.jpg, or x.jpg and x.png; an input image, x.png drawn into its own folder)."""
    stem = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0])
    target, number = stem + ".png", 1
    while os.path.realpath(target) in taken:
        number += 1
        target = f"{stem}_{number}.png"
    taken.add(os.path.realpath(target))
    return target


def _check_label_names(class_names, labels):
    """Refuse, before anything is written, class names the ``labels`` files would not give back (one
    name a line: an empty or multi-line name, which a model trained before the data sources refused
    them may hold) and, for LabelMe, the markers of its ``labels.txt``."""
    from keras_frcnn.data.labelme_folder import LIST_MARKERS
    from keras_frcnn.data.problems import DataError

    markers = LIST_MARKERS if labels == "labelme" else ()
    bad = [name for name in class_names if not name or name.splitlines() != [name] or name in markers]
    if bad:
        raise DataError(f"--labels {labels}: the model's class names {bad!r} would not read back from the label "
                        "files (one name a line" + ("; LabelMe's labels.txt marks its background and ignored "
                                                    "labels so): use --labels voc or yolo" if markers else ")"))


def _detect_and_draw(detect, class_names, image, path, target, min_score) -> dict:
    """Detect in ``image``, draw the detections at ``min_score`` or above into ``target``; their
    record in ``detections.json``."""
    import numpy as np

    from keras_frcnn.visualize import draw_detections

    out = {k: np.asarray(v)[0] for k, v in detect(image[None]).items()}
    n = int(out["num_detections"])
    boxes, scores, labels = out["boxes"][:n], out["confidence"][:n], out["labels"][:n]
    _write_png(np.asarray(draw_detections(image, boxes, scores, labels, class_names, min_score=min_score)), target)
    kept = [{"class": class_names[int(label)], "label": int(label), "score": round(float(score), 6),
             "box": [round(float(c), 2) for c in (box[1], box[0], box[3], box[2])]}
            for box, score, label in zip(boxes, scores, labels) if score >= min_score]
    return {"image": path, "drawing": target, "height": int(image.shape[0]), "width": int(image.shape[1]),
            "detections": kept}


def _write_labels(record, kind, out_dir, class_names, labelled, warn):
    """A ``detections.json`` record as the labels of its image: Pascal VOC XML, YOLO lines or a
    LabelMe JSON file. LabelMe files name their image inside (``imagePath``) and are named as its
    drawing; YOLO and VOC files are found by the image's name without its suffix (Ultralytics,
    LabelImg), so they are named so, and a second image of that name (``x.jpg`` and ``x.png``;
    ``a/x.jpg`` and ``b/x.jpg``) gets none, warned: its file would be the first one's
    (``labelled``: the names written)."""

    from keras_frcnn.files import write_atomically

    name = os.path.splitext(os.path.basename(record["drawing"]))[0]
    height, width = record["height"], record["width"]
    if kind in ("yolo", "voc"):
        name = os.path.splitext(os.path.basename(record["image"]))[0]
        if name in labelled:
            file, tool = (f"labels/{name}.txt", "YOLO") if kind == "yolo" else (f"annotations/{name}.xml", "LabelImg")
            warn(f"warning: {record['image']}: no {kind.upper()} labels written: {file} is another image's of that "
                 f"name ({tool} finds labels by the image's name without its suffix); its detections are in "
                 "detections.json")
            return
        labelled.add(name)
    if kind == "yolo":  # normalised on the image as shown, as Ultralytics reads it (EXIF applied)
        (height, width), boxes = _as_shown(record)
        lines = []
        for detection, (x0, y0, x1, y1) in zip(record["detections"], boxes):
            lines.append(f"{detection['label']} {(x0 + x1) / 2 / width:.6f} {(y0 + y1) / 2 / height:.6f} "
                         f"{(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}\n")
        path = os.path.join(out_dir, "labels", f"{name}.txt")
        text = "".join(lines)
    elif kind == "labelme":
        path = os.path.join(out_dir, "labelme", f"{name}.json")
        (height, width), boxes = _as_shown(record)
        shapes = [{"label": d["class"], "points": [box[:2], box[2:]], "group_id": None,
                   "description": f"score {d['score']:.3f}", "shape_type": "rectangle", "flags": {}}
                  for d, box in zip(record["detections"], boxes)]
        image = os.path.relpath(os.path.abspath(record["image"]), os.path.dirname(os.path.abspath(path)))
        text = _json_text({"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image, "imageData": None,
                           "imageHeight": height, "imageWidth": width}, indent=2)
    else:
        path = os.path.join(out_dir, "annotations", f"{name}.xml")
        text = _voc_xml(record)
        if _NOT_UTF8.search(text):  # (XML holds no such character, even as a reference)
            warn(f"warning: {record['image']}: no VOC labels written: the file's name is not UTF-8 (bytes of "
                 "another encoding), which a VOC XML file cannot hold; rename it (its detections are in "
                 "detections.json)")
            return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_atomically(path, text)


# The characters Python gives the bytes of a file name that are not UTF-8 (os.fsdecode's surrogates).
_NOT_UTF8 = re.compile("[\udc80-\udcff]")


def _json_text(value, indent):
    """JSON text of ``value`` with its non-ASCII characters as they are, except the bytes of a
    file name that is not UTF-8 (a Latin-1 name on Linux), written as the escapes ``\\udcXX``
    that Python's ``json`` reads back to that name (no UTF-8 file can hold them as they are)."""
    import json

    text = json.dumps(value, indent=indent, ensure_ascii=False)
    return _NOT_UTF8.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def _as_shown(record):
    """A record's size and boxes (``[xmin, ymin, xmax, ymax]`` lists) on its image as LabelMe shows
    it and Ultralytics reads it, with its EXIF orientation applied (the detections are on the stored
    pixels)."""
    import numpy as np

    from keras_frcnn.data.image_files import CheckedImage, check_image, shown_size, to_stored_frame

    height, width = record["height"], record["width"]
    boxes = [d["box"] for d in record["detections"]]
    try:
        orientation = check_image(record["image"]).orientation
    except ValueError:  # (read by TensorFlow, not by Pillow: as stored)
        orientation = 1
    if orientation == 1 or not boxes:
        return (height, width), boxes
    stored = np.float32([height, width, height, width])
    yxyx = np.asarray(boxes, np.float32)[:, [1, 0, 3, 2]] / stored
    # The turn from the stored pixels to the shown ones undoes orientation o's: the turn of 8 for 6, of 6 for 8,
    # and of o itself for the others (mirrors and half turns).
    shown = to_stored_frame(yxyx, {6: 8, 8: 6}.get(orientation, orientation))
    size = shown_size(CheckedImage(height, width, orientation))
    scaled = shown * np.float32([size[0], size[1], size[0], size[1]])
    return size, [[round(float(v), 2) for v in (b[1], b[0], b[3], b[2])] for b in scaled]


def _voc_xml(record) -> str:
    """Pascal VOC XML of a record, as LabelImg writes it: continuous edges ``x0 .. x1`` become the
    1-based pixel numbers ``round(x0) + 1 .. round(x1)`` (the inverse of how the loaders read them)."""
    import xml.etree.ElementTree as ElementTree

    height, width = record["height"], record["width"]
    root = ElementTree.Element("annotation")
    for tag, text in (("folder", os.path.basename(os.path.dirname(os.path.abspath(record["image"])))),
                      ("filename", os.path.basename(record["image"])), ("path", os.path.abspath(record["image"]))):
        ElementTree.SubElement(root, tag).text = text
    ElementTree.SubElement(ElementTree.SubElement(root, "source"), "database").text = "Unknown"
    size = ElementTree.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ElementTree.SubElement(size, tag).text = str(value)
    ElementTree.SubElement(root, "segmented").text = "0"
    for detection in record["detections"]:
        x0, y0, x1, y1 = detection["box"]
        xmin, ymin = min(max(round(x0) + 1, 1), width), min(max(round(y0) + 1, 1), height)
        box = (xmin, ymin, min(max(round(x1), xmin), width), min(max(round(y1), ymin), height))
        node = ElementTree.SubElement(root, "object")
        for tag, text in (("name", detection["class"]), ("pose", "Unspecified"), ("truncated", "0"),
                          ("difficult", "0")):
            ElementTree.SubElement(node, tag).text = text
        bndbox = ElementTree.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box):
            ElementTree.SubElement(bndbox, tag).text = str(value)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="unicode") + "\n"


def _write_png(pixels, path):
    """``pixels`` as a PNG at ``path``, whole or not at all (a full disk leaves no torn drawing);
    an ``OSError`` names the file."""
    from PIL import Image

    from keras_frcnn.files import write_atomically

    try:
        write_atomically(path, lambda partial: Image.fromarray(pixels).save(partial, format="PNG"))
    except OSError as error:
        if error.filename is None:  # Pillow's write errors name no file
            raise OSError(error.errno, error.strerror or str(error), path) from None
        raise


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m keras_frcnn.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a .keras file written by train.py, or an exported model (SavedModel "
                        "folder, .onnx, .xml, .tflite)")
    parser.add_argument("images", nargs="+", help="image files or folders of them")
    parser.add_argument("--out", required=True, help="folder for the PNGs and detections.json")
    parser.add_argument("--min-score", type=float, default=0.3, help="draw and list detections scoring at least this (default 0.3; the model "
                        "itself returns those scoring at least its detector.score_threshold, 0.05 unless "
                        "trained otherwise, so a lower value shows no more)")
    parser.add_argument("--labels", choices=["voc", "yolo", "labelme"],
                        help="also write the detections as labels to correct in an annotation tool: Pascal VOC "
                        "XML in DIR/annotations/ (LabelImg), YOLO lines in DIR/labels/ with DIR/classes.txt, or "
                        "LabelMe JSON files in DIR/labelme/ (LabelMe opens the folder)")
    args = parser.parse_args(argv)
    if not 0 <= args.min_score <= 1:  # nan too
        parser.error(f"--min-score is a score in [0, 1], got {args.min_score}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out}: a file, not a folder")
    missing = [path for path in args.images if not os.path.exists(path)]
    links = [path for path in missing if os.path.islink(path)]  # to no file, or a loop of links
    if links:
        parser.error(f"a link to no file (or a loop of links): {', '.join(links[:5])}"
                     + (f" and {len(links) - 5} more" if len(links) > 5 else ""))
    if missing:  # a mistyped name, told before the model is loaded
        parser.error(f"no such file or folder: {', '.join(missing[:5])}"
                     + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    cli.quiet_tensorflow()
    return cli.run(lambda: _predict(args))


def _predict(args):
    if not image_paths(args.images, warn=lambda message: print(message, file=sys.stderr)):
        raise cli.UsageError(f"no image files in {', '.join(args.images)}")
    if args.model.endswith(".keras"):
        model = cli.load_model(args.model).for_inference()
        floor = model.frcnn_config.detector.score_threshold
        if args.min_score < floor:
            print(f"note: --min-score {args.min_score:g} is below the model's own score threshold "
                  f"(detector.score_threshold {floor:g}): detections scoring at least {floor:g} are shown",
                  file=sys.stderr)
    else:
        from keras_frcnn.formats import load_runtime_model

        try:
            model = load_runtime_model(args.model)
        except Exception as error:  # each runtime has exceptions of its own for a bad file
            raise cli.UsageError(f"--model {args.model}: cannot be opened "
                                 f"({type(error).__name__}: {error})") from None
    _, failed = predict_files(model, args.images, args.out, args.min_score, labels=args.labels)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
