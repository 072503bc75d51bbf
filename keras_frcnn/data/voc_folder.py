"""A PASCAL VOC folder -> examples in the layout of :mod:`keras_frcnn.data.examples`.

The folder is laid out like ``VOCdevkit/VOC2007``::

    DIR/Annotations/<id>.xml          one XML file per image
    DIR/JPEGImages/<id>.jpg           the image (or the file named by the XML's <filename>)
    DIR/ImageSets/Main/<split>.txt    the ids of a split, one per line ("trainval", "test", ...)

or as annotation tools write it: ``images/`` in place of ``JPEGImages/`` (Label Studio), or the
XML files beside their images in ``DIR`` itself (LabelImg's default, Roboflow's "Pascal VOC"
export); see :func:`voc_layout`. Without split files the split ``all`` is every annotation file,
and a folder trains on ``all[:90%]`` and evaluates on ``all[90%:]`` (:func:`default_splits`).

Boxes are converted exactly as TFDS's ``voc`` builder converts them: the XML's 1-based pixel
numbers are divided by the image's width and height with no offset (``xmin / width``,
``ymax / height``, ...), so the same box read from the folder and from ``tfds.load("voc/2007")``
has the same normalised coordinates. Both sources say so (``DetectionSource.voc_pixel_numbers``),
and the pipelines turn the pixel numbers into continuous coordinates, ``[xmin - 1, xmax]``. TFDS divides by the XML's ``<size>``; here the size of the image
file itself is used, which is the same for genuine VOC data and stays right when a hand-made XML
gives a wrong size (that is warned about).

XML is parsed with ``defusedxml``: a file declaring entities (a "billion laughs" bomb, external
entities) is refused with a :class:`~keras_frcnn.data.problems.DataError` naming it.
"""

from __future__ import annotations

import math
import os
import re
import typing
import unicodedata

import defusedxml
import defusedxml.ElementTree
import numpy as np

from keras_frcnn.data.examples import (DetectionSource, ImageRecord, VOC_CLASSES, class_name, one_record_per_image,
                                      records_to_source)
from keras_frcnn.data.image_files import (IMAGE_SUFFIXES, annotated_as_shown, check_images, exif_undecided, folded,
                                          frame_undecided, shown_size, to_stored_frame)
from keras_frcnn.data.problems import DataError, DataProblems, logger, warn_once


class VocObject(typing.NamedTuple):
    name: str
    box: tuple  # (xmin, ymin, xmax, ymax) as written in the XML: 1-based pixel numbers
    difficult: bool


class VocAnnotation(typing.NamedTuple):
    filename: typing.Optional[str]  # <filename>, if present
    size: typing.Optional[tuple]  # <size> as (height, width), if present and numeric
    objects: list  # [VocObject]; objects that could not be read are left out (with a warning)


def parse_voc_xml(path, problems: typing.Optional[DataProblems] = None) -> VocAnnotation:
    """Read one VOC annotation file.

    Raises ``DataError`` for entity-expansion attacks (always) and ``ValueError`` for a file that
    is not well-formed XML or has no ``<annotation>`` root. An ``<object>`` without a name or with
    a non-numeric box is skipped with a ``malformed object`` warning in ``problems``.
    """
    try:
        root = defusedxml.ElementTree.parse(os.fspath(path)).getroot()
    except defusedxml.DefusedXmlException as error:
        raise DataError(
            f"{os.fspath(path)}: refused to parse XML that declares entities or external references "
            f"(entity-expansion attack such as 'billion laughs'?): {type(error).__name__}"
        ) from None
    except Exception as error:  # ParseError, OSError, UnicodeDecodeError ...
        raise ValueError(f"malformed XML ({type(error).__name__}: {error})") from None
    if root.tag != "annotation":
        raise ValueError(f"malformed XML: root element is <{root.tag}>, not <annotation>")

    size = None
    size_node = root.find("size")
    if size_node is not None:
        try:
            size = (float(size_node.findtext("height")), float(size_node.findtext("width")))
        except (TypeError, ValueError):
            size = None

    objects = []
    for number, node in enumerate(root.findall("object")):
        name = (node.findtext("name") or "").strip()
        box = node.find("bndbox")
        try:
            if not name:
                raise ValueError("no <name>")
            if box is None:
                raise ValueError("no <bndbox>")
            coords = tuple(float(box.findtext(key)) for key in ("xmin", "ymin", "xmax", "ymax"))
            if not all(math.isfinite(c) for c in coords):
                raise ValueError(f"non-finite box {coords}")
        except (TypeError, ValueError) as error:
            if problems is not None:
                problems.warn("malformed object", path, f"object {number}: {error}", "object skipped")
            continue
        # TFDS: is_difficult = text == "1"; a missing <difficult> means not difficult.
        difficult = (node.findtext("difficult") or "0").strip() == "1"
        objects.append(VocObject(name, coords, difficult))
    filename = (root.findtext("filename") or "").strip() or None
    return VocAnnotation(filename, size, objects)


SPLIT_SLICE = re.compile(r"^(?P<name>[^\[\]]+?)\s*(?:\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?$")


def split_ids(voc_dir, split) -> list:
    """Image ids of ``split`` (``"trainval"``, ``"test"``, ``"train+val"`` ...), in file order.

    A split file's part can be taken as in TFDS's split expressions: ``"default[:90%]"`` and
    ``"default[90%:]"`` (percentages rounded to the nearest image), ``"trainval[100:]"``, so that a
    folder with one split file (an annotation tool's export) can hold part of it out.
    ``split=None`` or ``"all"`` (where no ``all.txt`` split file exists) is every annotation file,
    sorted by id. An image listed twice (in one file, or in train and val) is read once.
    """
    return list(dict.fromkeys(_listed_ids(voc_dir, split)[0]))


def _listed_ids(voc_dir, split) -> tuple:
    """(the ids of :func:`split_ids`, an image in two parts of the split there twice; how many more
    times its files list images than once: each file's ids are taken once before it is sliced)."""
    if split is None:
        return _annotated_ids(voc_dir), 0
    ids, repeats = [], 0
    for part in str(split).split("+"):
        match = SPLIT_SLICE.match(part.strip())
        path = os.path.join(voc_dir, "ImageSets", "Main", f"{match['name'] if match else part.strip()}.txt")
        if match and match["name"] == ALL and not os.path.isfile(path):
            listed = _annotated_ids(voc_dir)
            ids.extend(sliced(listed, match))
            continue
        if match is None or not os.path.isfile(path):
            main = os.path.join(voc_dir, "ImageSets", "Main")
            available = sorted(n[:-4] for n in os.listdir(main) if n.endswith(".txt") and "_" not in n) \
                if os.path.isdir(main) else []
            some = min(available, key=lambda name: name == "test") if available else None  # (not test if other)
            hint = f"; parts of one as in TFDS, e.g. {some}[:90%] and {some}[90%:]" \
                if available else f"; {ALL!r} is every annotation file, e.g. {ALL}[:90%] and {ALL}[90%:]"
            raise DataError(f"{path}: split file not found (splits here: {available}{hint})" if match else
                            f"split {part.strip()!r}: not a split name or a slice of one such as trainval[:90%]")
        annotations_dir = voc_layout(voc_dir)[0]
        try:
            with open(path, encoding="utf-8-sig") as f:  # -sig: Windows tools start files with a BOM
                listed = [_listed_id(annotations_dir, line.strip()) for line in f if line.strip()]
        except UnicodeDecodeError as error:
            raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); save it as "
                            "UTF-8") from None
        listed = _as_annotated(annotations_dir, listed, path)
        once = list(dict.fromkeys(listed))
        repeats += len(listed) - len(once)
        ids.extend(sliced(once, match))
    return ids, repeats


ALL = "all"  # the split of every annotation file (where no all.txt says otherwise)


def _as_annotated(annotations_dir, ids, path) -> list:
    """``ids`` of a split file, an id that names no annotation file read as the one that is its
    number ("1" for 000001.xml: a split file saved by a spreadsheet, which drops the zeros, warned
    once) or its name in the other Unicode form (a folder written on macOS, which decomposes é
    into e and its accent), where one file is."""
    def number(text):
        return int(text) if text.isascii() and text.isdigit() else None

    if all(image_id.isascii() and number(image_id) is None for image_id in ids):
        return ids
    stems = {name[:-4] for name in os.listdir(annotations_dir) if name.endswith(".xml")} \
        if os.path.isdir(annotations_dir) else set()
    by_number, by_form = {}, {}
    for stem in stems:
        if number(stem) is not None:
            by_number.setdefault(number(stem), []).append(stem)
        by_form.setdefault(unicodedata.normalize("NFC", stem), []).append(stem)
    restored, unpadded = [], []
    for image_id in ids:
        if image_id not in stems:
            digits = number(image_id) is not None
            same = by_number.get(number(image_id), ()) if digits else \
                by_form.get(unicodedata.normalize("NFC", image_id), ())
            if len(same) == 1:
                if digits:
                    unpadded.append((image_id, same[0]))
                image_id = same[0]
        restored.append(image_id)
    if unpadded:
        warn_once("%s: %d ids written without their leading zeros (e.g. %s for %s.xml; a file saved by a "
                  "spreadsheet?): read as the annotation files' ids", path, len(unpadded), *unpadded[0])
    return restored


def _annotated_ids(voc_dir) -> list:
    annotations_dir, _ = voc_layout(voc_dir)
    return sorted(n[:-4] for n in os.listdir(annotations_dir) if n.endswith(".xml"))


_FLAGGED = re.compile(r"^(?P<id>.*\S)\s+(?:-1|0|1)$")


def _listed_id(annotations_dir, line) -> str:
    """The image id of a split file's line: the whole line (ids an annotation tool took from file
    names may hold spaces: "IMG 0001"), or ``<id>`` of a per-class file's ``"<id> <flag>"`` (flag
    -1, 0 or 1). A line that reads both ways ("IMG 1") is the whole line if it names an
    annotation file. An id written with its image's suffix ("000005.jpg", as some conversion
    scripts write them) is the id without it where only that names an annotation file."""
    flagged = _FLAGGED.match(line)
    if flagged and not os.path.isfile(os.path.join(annotations_dir, line + ".xml")):
        line = flagged["id"]
    stem, suffix = os.path.splitext(line)
    if suffix.lower() in IMAGE_SUFFIXES and not os.path.isfile(os.path.join(annotations_dir, line + ".xml")) \
            and os.path.isfile(os.path.join(annotations_dir, stem + ".xml")):
        return stem
    return line


def split_parts(split, names, where) -> list:
    """The :data:`SPLIT_SLICE` matches of ``split``'s ``+``-joined parts (``"train[:90%]+val"``),
    each naming one of ``names``; else a ``DataError`` from ``where`` (a data set's file)."""
    matches = []
    for part in str(split).split("+"):
        match = SPLIT_SLICE.match(part.strip())
        if match is None or match["name"] not in names:
            raise DataError(f"{where}: split {part.strip()!r}: not one of its splits {list(names)} "
                            "(or a part of one such as train[:90%])")
        matches.append(match)
    return matches


def sliced(listed, match) -> list:
    """The part of ``listed`` a :data:`SPLIT_SLICE` match takes (all of it without brackets)."""
    return listed[slice(slice_position(match["start"], len(listed)), slice_position(match["stop"], len(listed)))]


def slice_position(bound, count):
    """A slice bound of a split expression (``"90%"``, ``"-10"``, ``None``) in ``count`` ids."""
    if bound is None:
        return None
    if bound.endswith("%"):
        return int(math.floor(count * int(bound[:-1]) / 100 + 0.5))  # nearest, halves up
    return int(bound)


def default_splits(voc_dir, *, warn: bool = True) -> tuple:
    """The folder's own (training, evaluation) splits: ``trainval`` -> ``test`` as VOC 2007 ships
    them; ``train`` -> ``val`` when the folder has no labelled ``test`` split but has ``val``, as
    VOC 2012 does (its ``test.txt``, from the test archive, lists images without annotation files),
    which is also TFDS ``voc/2012``'s choice. A folder with none of these split files (an annotation
    tool's) holds the last tenth of its annotation files (sorted by id) out: ``all[:90%]`` ->
    ``all[90%:]`` (``all[:-1]`` -> ``all[-1:]`` for fewer than ten). A ``test.txt`` passed over
    for a tenth of the training split (it names no annotation file) is warned about (``warn``)."""
    main = os.path.join(os.fspath(voc_dir), "ImageSets", "Main")
    files = split_files(voc_dir)
    has = {name: name in files for name in ("train", "val", "test", "trainval")}
    if not any(has.values()) and os.path.isdir(voc_dir):
        try:
            count = len(_annotated_ids(voc_dir))
        except DataError:  # not a VOC folder: loading it says so
            count = 0
        return held_out_tenth(ALL, count)
    # Without trainval.txt its parts (trainval is train + val); a folder of one split file holds a tenth out.
    name = lambda split: files.get(split, split)  # noqa: E731  (the file's own name: Train, Validation)
    training = name("trainval") if has["trainval"] else "+".join(name(s) for s in ("train", "val") if has[s])
    if has["test"] and _any_annotated(voc_dir, split_ids(voc_dir, name("test"))):
        return training or "trainval", name("test")  # (test.txt alone: evaluated; training asks for a split)
    if has["train"] and has["val"]:
        return name("train"), name("val")
    if not training:  # (test.txt alone, unlabelled: loading says so)
        return "trainval", name("test")
    held_out = held_out_tenth(training, len(split_ids(voc_dir, training)))
    if has["test"] and warn:
        logger.warning("%s: none of its images has an annotation file in %s (an unlabelled test set); "
                       "evaluating on %s instead", os.path.join(main, f"{name('test')}.txt"),
                       voc_layout(voc_dir)[0], held_out[1])
    return held_out


# Split files and subsets as annotation tools name them: CVAT's Pascal VOC export writes its
# subsets' names (Train.txt, Validation.txt); CVAT's own export names them so (cvat_xml).
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "test": "test", "testing": "test", "trainval": "trainval"}


def split_files(voc_dir) -> dict:
    """``{"train" | "val" | "test" | "trainval": file name without .txt}`` of the folder's split
    files in ``ImageSets/Main``, their names matched without case and with the tools' other names
    (``Train.txt``, ``Validation.txt``, ``valid.txt``); a file of the exact name comes first."""
    main = os.path.join(os.fspath(voc_dir), "ImageSets", "Main")
    try:
        stems = [n[:-4] for n in os.listdir(main) if n.endswith(".txt") and os.path.isfile(os.path.join(main, n))]
    except OSError:
        return {}
    found = {}
    for stem in sorted(stems, key=lambda stem: (stem not in SPLIT_ALIASES, stem)):
        canonical = SPLIT_ALIASES.get(stem.lower())
        if canonical and canonical not in found:
            found[canonical] = stem
    return found


def held_out_tenth(split, count) -> tuple:
    """``split``'s (training, evaluation) parts where a data set has no held-out split of its own:
    ``split[:90%]`` -> ``split[90%:]``, or for 2 to 9 images, whose tenth would round to none,
    ``split[:-1]`` -> ``split[-1:]``."""
    if 2 <= count < 10:
        return f"{split}[:-1]", f"{split}[-1:]"
    return f"{split}[:90%]", f"{split}[90%:]"


def labelled_split(voc_dir) -> typing.Optional[str]:
    """Every labelled image of a folder trained on beside another one: its own training and
    (labelled) evaluation split, ``"trainval+test"`` for VOC 2007, ``"train+val"`` (trainval) for
    VOC 2012; ``None`` (every annotation file) for a folder with neither split file (an annotation
    tool's export). VOC 2012's other annotation files (its action and layout tasks' images, most
    objects unlabelled) are in no Main split, and so left out."""
    main = os.path.join(os.fspath(voc_dir), "ImageSets", "Main")
    splits = default_splits(voc_dir, warn=False)  # (its evaluation split is not what the run evaluates on)
    if splits[0].startswith(f"{ALL}["):
        return None
    parts = [name for name in splits if "[" not in name
             and all(os.path.isfile(os.path.join(main, f"{part}.txt")) for part in name.split("+"))
             and _any_annotated(voc_dir, split_ids(voc_dir, name))]
    return "+".join(parts) or None


def labelmap_classes(voc_dir) -> typing.Optional[tuple]:
    """The classes of CVAT's ``labelmap.txt`` in ``voc_dir`` (its Pascal VOC export's: a
    ``name:color:parts:actions`` line a label, ``#`` comments, ``background`` first): its labels in
    the project's order, without ``background``; ``None`` without the file, or where they are VOC's
    names (which keep VOC's order, as without it)."""
    path = os.path.join(os.fspath(voc_dir), "labelmap.txt")
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = [line.strip() for line in f]
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot be read ({type(error).__name__}: {error})") from None
    names = tuple(name for name in (line.split(":", 1)[0].strip() for line in lines
                                    if line and not line.startswith("#")) if name and name != "background")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: a label named twice")
    return None if all(name.lower() in VOC_CLASSES for name in names) else names


def common_class_names(folders) -> typing.Optional[tuple]:
    """The class names of several folders trained on together, by :func:`load_voc_folder`'s rule
    over all their annotation files: ``None`` (each folder's own VOC names) when every name is a VOC
    class, else every name found, sorted; or the first folder's CVAT ``labelmap.txt``, where it has
    one (of names other than VOC's)."""
    listed = labelmap_classes(folders[0])
    if listed:
        return listed
    names = set()
    for folder in folders:
        annotations_dir, _ = voc_layout(folder)
        names |= _names_in(annotations_dir, {})
    voc_names, class_names = _class_names(names, " + ".join(os.fspath(folder) for folder in folders))
    return None if voc_names else class_names


# Image folders beside Annotations/: VOC's, then Label Studio's VOC export's.
IMAGE_FOLDERS = ("JPEGImages", "images", "Images")


def voc_layout(voc_dir) -> tuple:
    """``(annotations folder, images folder)`` of a VOC folder: ``Annotations/`` and the first of
    ``IMAGE_FOLDERS`` beside it; or, where there is no ``Annotations/`` but XML files, the folder
    itself for both (LabelImg, Roboflow). A ``DataError`` says what is missing."""
    voc_dir = os.fspath(voc_dir)
    annotations = os.path.join(voc_dir, "Annotations")
    if os.path.isdir(annotations):
        for name in IMAGE_FOLDERS:
            if os.path.isdir(os.path.join(voc_dir, name)):
                return annotations, os.path.join(voc_dir, name)
        raise DataError(f"{os.path.join(voc_dir, 'JPEGImages')}: not found; a VOC folder holds Annotations/ and "
                        "JPEGImages/ (or images/), or XML files beside their images")
    if not os.path.isdir(voc_dir):
        raise DataError(f"{voc_dir}: no such folder")
    if any(name.endswith(".xml") for name in os.listdir(voc_dir)):
        return voc_dir, voc_dir
    raise DataError(f"{annotations}: not found, and no XML file in {voc_dir}; a VOC folder holds Annotations/ "
                    "and JPEGImages/ (or images/), or XML files beside their images")


def _class_names(names, where) -> tuple:
    """``(voc_names, class_names)`` of the object names found: the 20 VOC names (TFDS's order) when
    every one is a VOC class (compared in lower case), else the names, sorted; a warning when they
    are mostly VOC names or some differ only in case."""
    voc_names = all(n.lower() in VOC_CLASSES for n in names)
    class_names = VOC_CLASSES if voc_names else tuple(sorted(names))
    strays = sorted(n for n in names if n.lower() not in VOC_CLASSES)
    if not voc_names and len(strays) < len(names) / 2:
        # Mostly VOC names: a typo in one file would silently renumber every class.
        warn_once("%s: names that are not VOC classes %s make the classes the %d names found, "
                  "sorted; pass classes=VOC_CLASSES to skip those objects instead", where, strays, len(names))
    by_case = {}  # (VOC names are compared in lower case already)
    for name in class_names if not voc_names else ():
        by_case.setdefault(name.lower(), []).append(name)
    for spellings in by_case.values():
        if len(spellings) > 1:  # "Tree" in some files, "tree" in others: two classes, each part of the data
            warn_once("%s: the class names %s differ only in case and are %d classes; fix the odd "
                      "files to merge them", where, spellings, len(spellings))
    return voc_names, class_names


def _names_in(annotations_dir, parsed) -> set:
    """The object names of every annotation file in ``annotations_dir`` (``parsed``: id ->
    :class:`VocAnnotation` already read)."""
    names = set()
    for filename in sorted(os.listdir(annotations_dir)):
        image_id = filename[:-4]
        if not filename.endswith(".xml"):
            continue
        if image_id not in parsed:
            try:
                parsed_other = parse_voc_xml(os.path.join(annotations_dir, filename))
            except DataError:
                raise
            except ValueError:
                continue  # warned about when a split containing it is loaded
            names.update(o.name for o in parsed_other.objects)
        else:
            names.update(o.name for o in parsed[image_id].objects)
    return names


def _any_annotated(voc_dir, ids) -> bool:
    """Whether any of the images ``ids`` has an annotation file."""
    annotations, _ = voc_layout(voc_dir)
    return any(os.path.isfile(os.path.join(annotations, f"{image_id}.xml")) for image_id in ids)


def load_voc_folder(
    voc_dir,
    split: typing.Optional[str] = "trainval",
    classes: typing.Optional[typing.Sequence[str]] = None,
    skip_empty: bool = False,
    decode_images: bool = True,
    strict: bool = False,
) -> DetectionSource:
    """A VOC folder's ``split`` as a :class:`DetectionSource` (examples in the split file's order).

    classes: the class names, in label order. ``None``: the 20 VOC names (TFDS's order) when every
      name in ``Annotations/`` is one of them (compared in lower case, as TFDS does), otherwise the
      names found in ``Annotations/``, sorted; or, where the folder has CVAT's ``labelmap.txt`` (of
      names other than VOC's), its labels in its order. Names are gathered from every annotation
      file, not just the split's, so that all splits of a folder get the same labels.
    skip_empty: leave out images without objects (by default they are kept, as negatives).
    decode_images: ``image`` as uint8 ``[H, W, 3]`` (True) or the encoded file bytes (False).
    strict: raise ``DataError`` on the first problem instead of warning and skipping.

    Problems (each a warning naming the file, counted in ``DetectionSource.problems``): missing
    annotation or image files, corrupt images, malformed XML or objects, unknown class names
    (object skipped), degenerate boxes (``xmax <= xmin`` or ``ymax <= ymin``: skipped), boxes
    reaching outside the image (clipped), an XML ``<size>`` that disagrees with the image.
    """
    voc_dir = os.fspath(voc_dir)
    annotations_dir, images_dir = voc_layout(voc_dir)
    problems = DataProblems(f"VOC folder {voc_dir} ({split or 'all'})", strict=strict)
    listed, repeats = _listed_ids(voc_dir, split)
    ids = list(dict.fromkeys(listed))
    if repeats + len(listed) - len(ids):
        logger.warning("%s: split %r lists %d images again (in one file, or in two of its parts): each read once",
                       voc_dir, split, repeats + len(listed) - len(ids))
    if ids and not _any_annotated(voc_dir, ids):
        # VOC 2012's test.txt: a split of unlabelled images, not len(ids) separate faults; or ids
        # that are not the annotation files' names (shown side by side).
        some = _annotated_ids(voc_dir)[:2] if os.path.isdir(annotations_dir) else []
        raise DataError(f"{os.path.join(voc_dir, 'ImageSets', 'Main')}: split {split!r}: none of its {len(ids)} "
                        f"ids ({', '.join(map(repr, ids[:2]))}{' ...' if len(ids) > 2 else ''}) names an annotation "
                        f"file in {annotations_dir} ("
                        + (f"whose files are {', '.join(f'{stem}.xml' for stem in some)} ...): ids that are not "
                           "the annotation files' names, or " if some else "none there): ")
                        + "an unlabelled test set, as VOC 2012's; evaluate on a labelled split, e.g. val")

    # Parse the split's annotations (warnings count here) ...
    parsed = {}
    for image_id in ids:
        path = os.path.join(annotations_dir, f"{image_id}.xml")
        if not os.path.isfile(path):
            problems.warn("missing annotation file", path, "annotation file is missing", "image skipped")
            continue
        try:
            parsed[image_id] = parse_voc_xml(path, problems)
        except DataError:
            raise
        except ValueError as error:
            problems.warn("malformed XML", path, str(error), "image skipped")

    # ... and the names of every annotation file, so that all splits agree on the labels.
    listed = labelmap_classes(voc_dir) if classes is None else None
    if listed:
        voc_names, class_names = False, listed
    elif classes is None:
        names = _names_in(annotations_dir, parsed)
        voc_names, class_names = _class_names(names, annotations_dir)
    else:
        voc_names = False
        class_names = tuple(class_name(c) for c in classes)
        if len(set(class_names)) != len(class_names) or not all(class_names):
            raise DataError(f"classes must be distinct, non-empty names; got {class_names}")
    label_of = {name: i for i, name in enumerate(class_names)}

    image_files = _image_index(images_dir)
    image_paths = {}
    for image_id, annotation in parsed.items():
        path = _find_image(images_dir, image_files, image_id, annotation.filename)
        if path is None:
            problems.warn("missing image file", os.path.join(images_dir, f"{image_id}.jpg"),
                          "image file is missing", "image skipped")
        else:
            image_paths[image_id] = path
    checked = dict(zip(image_paths, check_images(list(image_paths.values())), strict=True))

    records = []
    for image_id in ids:
        if image_id not in image_paths:
            continue
        image_path = image_paths[image_id]
        xml_path = os.path.join(annotations_dir, f"{image_id}.xml")
        size = checked[image_id]
        if isinstance(size, Exception):
            problems.warn("bad image file", image_path, str(size), "image skipped")
            continue
        annotation = parsed[image_id]
        as_shown = annotation.size is not None and annotated_as_shown(size, annotation.size)
        if as_shown:
            problems.warn("EXIF orientation", xml_path,
                          f"<size> {annotation.size[1]:g} x {annotation.size[0]:g} (w x h) is "
                          f"{os.path.basename(image_path)} as shown (EXIF orientation {size.orientation}; "
                          f"stored {size.width} x {size.height})", "boxes turned onto the stored pixels")
        elif annotation.size is not None and annotation.size != (float(size.height), float(size.width)):
            problems.warn("size mismatch", xml_path,
                          f"<size> says {annotation.size[1]:g} x {annotation.size[0]:g} (w x h) but "
                          f"{os.path.basename(image_path)} is {size.width} x {size.height}", "using the image's size")
        elif frame_undecided(size, annotation.size):
            problems.warn("EXIF orientation", image_path, exif_undecided(size), "boxes taken as stored")
        height, width = shown_size(size) if as_shown else size[:2]
        boxes, labels, difficult = [], [], []
        for obj in annotation.objects:
            name = obj.name.lower() if voc_names else obj.name
            if name not in label_of:
                problems.warn("unknown class", xml_path,
                              f"class name {obj.name!r} is not one of the classes", "object skipped")
                continue
            box = _normalised_box(obj.box, height, width, xml_path, problems)
            if box is None:
                continue
            boxes.append(box)
            labels.append(label_of[name])
            difficult.append(obj.difficult)
        if skip_empty and not boxes:
            continue
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        records.append(ImageRecord(
            path=image_path,
            filename=os.path.basename(image_path),
            boxes=_onto_stored_pixels(boxes, size) if as_shown else boxes,
            labels=np.asarray(labels, np.int64),
            difficult=np.asarray(difficult, np.bool_),
            annotation=xml_path,
        ))

    records = one_record_per_image(records, problems, pixel_numbers=True)
    problems.summary(len(records), hint=f"do {images_dir}'s files have the annotations' names?"
                     if problems.counts["missing image file"] else "")
    return records_to_source(records, class_names, problems.source, problems.counts,
                             decode_images=decode_images, voc_pixel_numbers=True)


def _normalised_box(box_xyxy, height, width, path, problems):
    """XML ``(xmin, ymin, xmax, ymax)`` -> normalised ``[ymin, xmin, ymax, xmax]``, or ``None``.

    The numbers are VOC's pixel numbers, both ends included (pixels 1 .. width): ``xmin == xmax``
    is a box one pixel wide (as the devkit and py-faster-rcnn read it), and a box is outside the
    image only where none of its pixels is in it."""
    xmin, ymin, xmax, ymax = box_xyxy
    if xmax < xmin or ymax < ymin:
        problems.warn("degenerate box", path,
                      f"degenerate box (xmin, ymin, xmax, ymax) = {box_xyxy}", "object skipped")
        return None
    clipped = (min(max(xmin, 0.0), width), min(max(ymin, 0.0), height),
               min(max(xmax, 0.0), width), min(max(ymax, 0.0), height))
    if clipped != tuple(box_xyxy):
        if xmin > width or ymin > height or xmax < 1 or ymax < 1:
            problems.warn("box outside the image", path,
                          f"box {box_xyxy} lies outside the {width} x {height} image", "object skipped")
            return None
        problems.warn("box clipped", path, f"box {box_xyxy} reaches outside the {width} x {height} image",
                      f"clipped to {clipped}")
    xmin, ymin, xmax, ymax = clipped
    # Same arithmetic as TFDS (Python floats, then float32): xmin / width, no offset.
    return [ymin / height, xmin / width, ymax / height, xmax / width]


def _onto_stored_pixels(boxes, image):
    """Boxes of VOC pixel numbers (normalised) drawn on ``image`` as shown -> on its stored pixels:
    turned as continuous boxes (a number ``n`` as a minimum is the edge ``n - 1``), then numbered
    again, so a mirrored box covers exactly the mirrored pixels."""
    shown = np.tile(shown_size(image), 2).astype(np.float32)
    stored = np.tile((image.height, image.width), 2).astype(np.float32)
    first = np.float32([1, 1, 0, 0])
    turned = to_stored_frame((boxes * shown - first) / shown, image.orientation)
    return (turned * stored + first) / stored


class _ImageIndex(typing.NamedTuple):
    by_stem: dict  # stem -> file names
    by_lower_stem: dict  # the same folded (image_files.folded: a folder made on Windows or macOS, read on Linux)


def _image_index(images_dir) -> _ImageIndex:
    """The files of ``images_dir`` by stem (listed once: a stat per candidate is slow on NFS)."""
    index = _ImageIndex({}, {})
    for name in os.listdir(images_dir):
        if name.lower().endswith(".xml"):  # (annotations beside their images)
            continue
        stem = os.path.splitext(name)[0]
        index.by_stem.setdefault(stem, []).append(name)
        index.by_lower_stem.setdefault(folded(stem), []).append(name)
    return index


def _find_image(images_dir, image_files: _ImageIndex, image_id, xml_filename):
    candidates = image_files.by_stem.get(image_id, [])
    for preferred in (f"{image_id}.jpg", xml_filename):
        if preferred and preferred in candidates:
            return os.path.join(images_dir, preferred)
    if xml_filename and os.path.isfile(os.path.join(images_dir, xml_filename)):
        return os.path.join(images_dir, xml_filename)
    # A <filename> with the folder it was annotated in ("images/a.jpg", "C:\\data\\a.jpg"): its name.
    name = re.split(r"[\\/]", xml_filename or "")[-1]
    if name and os.path.isfile(os.path.join(images_dir, name)):
        return os.path.join(images_dir, name)
    # An image suffix first; else the id's file of another suffix (a.tif, a.jfif), whose check then
    # says what it is rather than "missing".
    candidates = sorted(candidates, key=lambda name: (os.path.splitext(name)[1].lower() not in IMAGE_SUFFIXES, name))
    if candidates:
        return os.path.join(images_dir, candidates[0])
    # In other letter case (a folder made on Windows or macOS, read on Linux): img_1.jpg for IMG_1.
    recased = [name for name in image_files.by_lower_stem.get(folded(image_id), [])
               if os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES]
    return os.path.join(images_dir, recased[0]) if len(recased) == 1 else None
