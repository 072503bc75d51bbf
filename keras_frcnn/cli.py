"""Command-line pieces shared by ``train.py``, ``export.py`` and the ``evaluate`` / ``predict``
modules: the data-source options and the quiet start-up."""

from __future__ import annotations

import argparse
import os


def quiet_tensorflow():
    """Keep TensorFlow's C++ start-up chatter off the user's terminal (set before importing TF)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def add_data_args(parser: argparse.ArgumentParser):
    group = parser.add_argument_group("data (one source; default: the config's dataset)")
    group.add_argument("--dataset", help='a TFDS name ("voc/2007", "voc/2012", "coco/2017") or "shapes"')
    group.add_argument("--voc-dir", help="a VOC folder: Annotations/, JPEGImages/, ImageSets/Main/")
    group.add_argument("--coco-json", help="a COCO instances JSON file (with --coco-images)")
    group.add_argument("--coco-images", help="the folder of the COCO JSON's images")
    group.add_argument("--classes", help="class names for --voc-dir, comma separated, in label order")
    group.add_argument("--data-dir", help="TFDS's data directory (default ~/tensorflow_datasets)")
    group.add_argument("--shapes-images", default="500,100",
                       help="train,test image counts of the built-in shapes set (default 500,100)")
    return group


def source_kind(args, default_dataset: str) -> str:
    if args.voc_dir:
        return "voc-dir"
    if args.coco_json:
        return "coco-json"
    return (args.dataset or default_dataset)


def load_source(args, split: str, default_dataset: str = "shapes"):
    """The ``DetectionSource`` the options name, for ``split`` (a VOC split-file name or a TFDS
    split expression); COCO JSON files are one split each."""
    from keras_frcnn import data

    if args.voc_dir:
        classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
        return data.load_voc_folder(args.voc_dir, split=_voc_split(split), classes=classes)
    if args.coco_json:
        if not args.coco_images:
            raise SystemExit("--coco-json needs --coco-images (the folder of its images)")
        return data.load_coco_json(args.coco_json, args.coco_images)
    name = args.dataset or default_dataset
    if name == "shapes":
        num_train, num_test = (int(n) for n in args.shapes_images.split(","))
        return data.load_shapes(split=split, data_dir=args.data_dir, num_train=num_train,
                                num_test=num_test)
    return data.load_tfds(name, split, data_dir=args.data_dir)


def _voc_split(split: str) -> str:
    # TFDS's "train+validation" is the VOC folder's trainval.txt.
    return {"train+validation": "trainval", "validation": "val"}.get(split, split)


def is_voc(args, default_dataset: str) -> bool:
    """VOC data: evaluated with the devkit's inclusive-pixel IoU."""
    return bool(args.voc_dir) or source_kind(args, default_dataset).startswith("voc")


def is_coco(args, default_dataset: str) -> bool:
    return bool(args.coco_json) or source_kind(args, default_dataset).startswith("coco")
