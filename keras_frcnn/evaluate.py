"""Evaluate a model: VOC07 11-point mAP, VOC2010+ area mAP, per-class AP and PR curves; COCO AP
through pycocotools for COCO, YOLO and TFRecord data (with COCO's areas and crowd flags).

    python -m keras_frcnn.evaluate --model runs/shapes/model.keras [--dataset shapes] [--split test]
        [--voc-dir DIR | --coco-json FILE --coco-images DIR | --yolo-data data.yaml | --tfrecord FILES
         | --csv FILE | --labelme DIR | --via PATH | --cvat PATH]
        [--out metrics.json] [--plots DIR]
        [--min-side N [--max-side M]]

The split defaults to the data set's held-out labelled split (voc/2007: test, coco/2017:
validation, a VOC folder: test, a YOLO data set, TFRecord, CSV or LabelMe files: val); a COCO JSON
file, or TFRecord, CSV or LabelMe files of one split, are evaluated as a whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import weakref

from keras_frcnn import cli


_DETECT_FUNCTIONS = weakref.WeakKeyDictionary()  # model -> its traced detect (a run's --eval-every reuses it)


def _detect_function(model):
    """``model.detect`` as one ``tf.function`` per model, traced once however often it evaluates
    (a new function each time retraced at every evaluation, and TensorFlow warned of it)."""
    import tensorflow as tf

    if model not in _DETECT_FUNCTIONS:
        held = weakref.ref(model)  # (not the model itself: the entry goes with it)

        def detect(images, sizes):
            return held().detect(images, sizes)

        _DETECT_FUNCTIONS[model] = tf.function(
            detect, autograph=False, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                                                      tf.TensorSpec([None, 2], tf.int32)])
    return _DETECT_FUNCTIONS[model]


def collect(model, source, batch_size: int = 1):
    """Run ``model`` (a ``FasterRCNN``) over ``source`` -> (detections, ground_truth, image sizes),
    lists in the format of ``keras_frcnn.metrics`` (boxes in original-image pixels; ground truth
    with the source's object ``area`` where it has one, else the box's)."""
    from keras_frcnn.data.pipeline import eval_dataset

    run = _detect_function(model)
    detections, ground_truth, sizes = [], [], []
    for batch in eval_dataset(source, batch_size=batch_size):
        out = run(batch["images"], batch["image_size"])
        out = {k: v.numpy() for k, v in out.items()}
        for i in range(len(out["num_detections"])):
            n, g = int(out["num_detections"][i]), int(batch["num_gt"][i])
            detections.append({"boxes": out["boxes"][i, :n], "scores": out["confidence"][i, :n],
                               "labels": out["labels"][i, :n]})
            ground_truth.append({"boxes": batch["gt_boxes"][i, :g].numpy(),
                                 "labels": batch["gt_classes"][i, :g].numpy() - 1,
                                 "difficult": batch["gt_difficult"][i, :g].numpy(),
                                 "area": batch["gt_area"][i, :g].numpy()})
            sizes.append(tuple(int(s) for s in batch["image_size"][i].numpy()))
    return detections, ground_truth, sizes


def evaluate(model, source, batch_size=1, coco=False, plot_dir=None):
    """-> (``DetectionMetrics``, the ``metrics.json`` dict). ``coco``: add pycocotools' AP under
    ``"coco"`` (the headline). The dict names the data evaluated (``"evaluated_on"``).

    IoUs are continuous: the pipeline has turned VOC's pixel numbers into continuous boxes
    (``DetectionSource.voc_pixel_numbers``), on which the continuous IoU is the VOC devkit's
    inclusive-pixel IoU of the original numbers, up to float32: the data sets hold boxes as
    float32 fractions of the image size (TFDS's layout), so a ground-truth edge comes back within
    ~1e-5 px of its number, and an overlap exactly on a threshold (or a COCO area exactly on a
    size bin's edge) may fall on either side of it."""
    from keras_frcnn import metrics
    from keras_frcnn.data.examples import classes_differ, in_class_order
    from keras_frcnn.data.problems import DataError

    class_names = list(model.class_names)
    source = in_class_order(source, class_names)  # (its names, or some of them, in any order: matched by name)
    if list(source.class_names) != class_names:  # labels would be read as other classes
        raise DataError(f"{source.name} has {classes_differ(source.class_names, class_names)} (the model's "
                        "classes): evaluate it on data of the model's classes, or some of them")
    detections, ground_truth, sizes = collect(model, source, batch_size)
    result = metrics.evaluate_detections(detections, ground_truth, class_names, inclusive_pixels=False)
    image = model.frcnn_config.image
    summary = {"evaluated_on": source.name, **metrics.metrics_json(result),
               "test_scale": {"min_side": image.min_side, "max_side": image.max_side}}
    if coco:
        summary["coco"] = metrics.coco_ap(detections, ground_truth, class_names, sizes)
    if plot_dir:
        summary["pr_curves"] = [str(p) for p in metrics.plot_pr_curves(result, plot_dir)]
    return result, summary


def no_evaluation(train_source) -> dict:
    """The ``metrics.json`` of a run without held-out data."""
    return {"evaluated_on": None, "mAP": None, "per_class": {}, "num_images": 0,
            "note": f"no held-out data was given for {train_source.name}: not evaluated "
                    "(a model is never evaluated on its training images)"}


def headline(summary) -> str:
    """The one-line result: COCO AP first for COCO data, then VOC07 mAP, and the data evaluated."""
    if summary.get("evaluated_on") is None:
        return "not evaluated (no held-out data)"
    if not sum(summary.get("num_positives", {}).values()):
        return (f"{summary['evaluated_on']} has no labelled objects: mAP undefined "
                f"({summary['num_images']} images)")
    parts = []
    if "coco" in summary:
        c = summary["coco"]
        parts.append(f"COCO AP@[.5:.95] {c['AP']:.4f} (AP50 {c['AP50']:.4f}, AP75 {c['AP75']:.4f}, "
                     f"small {c['AP_small']:.3f} medium {c['AP_medium']:.3f} large {c['AP_large']:.3f})")
    voc = "VOC07 mAP@0.5" if "coco" in summary else "VOC07 mAP"
    parts.append(f"{voc} {_number(summary['mAP'])} (area mAP {_number(summary['mAP_area'])})")
    return "; ".join(parts) + f" on {summary['evaluated_on']}, {summary['num_images']} images"


def _number(value):
    return "undefined" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}"


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m keras_frcnn.evaluate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a .keras file written by train.py")
    parser.add_argument("--split", help="split to evaluate (default: the data set's held-out split)")
    parser.add_argument("--out", help="write metrics.json here")
    parser.add_argument("--plots", help="write a precision-recall PNG per class here")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--min-side", type=int,
                        help="test at this shorter side instead of the model's (its config's image.min_side)")
    parser.add_argument("--max-side", type=int,
                        help="with --min-side: cap on the longer side (default the model's, or 1.5x --min-side)")
    cli.add_data_args(parser)
    args = parser.parse_args(argv)
    if args.max_side and not args.min_side:
        parser.error("--max-side goes with --min-side")
    cli.require_positive(parser, args, "min_side", "max_side", "batch_size")
    if args.max_side and args.max_side < args.min_side:
        parser.error(f"--max-side {args.max_side} is below --min-side {args.min_side}: it caps the longer side")
    if args.plots and os.path.exists(args.plots) and not os.path.isdir(args.plots):
        parser.error(f"--plots {args.plots}: a file; the plots go in a folder")
    if args.voc_dir and len(args.voc_dir) > 1:
        parser.error("--voc-dir: evaluate one folder at a time")
    cli.quiet_tensorflow()
    return cli.run(lambda: _evaluate(args))


def _evaluate(args):
    from keras_frcnn import metrics
    from keras_frcnn.data import VOC_CLASSES
    from keras_frcnn.files import write_atomically

    if args.out:  # checked before the evaluation, not after it
        if os.path.isdir(args.out):
            raise cli.UsageError(f"--out {args.out}: a folder; give the metrics file's name, e.g. "
                                 f"{os.path.join(args.out, 'metrics.json')}")
        cli.make_folder(f"--out {args.out}", os.path.dirname(args.out) or ".")
    if args.plots:
        cli.make_folder(f"--plots {args.plots}", args.plots)
    model = cli.load_model(args.model)
    if args.min_side:
        model = model.at_scale(args.min_side, args.max_side)
    model = model.for_inference()
    cfg = model.frcnn_config
    runs_data = not cli.sources_given(args) and not args.dataset and bool(cfg.dataset)  # (files or a TFDS set)
    choice = cli.choose_data(args, cfg, test_split=args.split, evaluation=True)
    if choice.kind == "voc-dir" and choice.classes is None and tuple(model.class_names) != VOC_CLASSES:
        # A VOC folder lists no classes (its own would be the names found in its files, those of
        # a test folder without every class among them): read with the model's, objects of other
        # names skipped and counted.
        choice = dataclasses.replace(choice, classes=tuple(model.class_names))
    source = cli.load_test_source(args, choice)
    if source.num_objects == 0:
        raise cli.UsageError(f"{source.name} has no labelled objects of the model's classes "
                             f"({cli.class_list(model.class_names)}) to evaluate on: objects of other classes "
                             "are skipped (counted above), difficult / crowd ones not scored; give the data this model was trained for")
    if runs_data and choice.kind != "coco-json" and choice.train_split:  # (COCO: its held-out file is another)
        # The run's own files, read again: a --split of its training images, or files added since
        # that moved a held-out slice (all[90%:]) onto trained ones, are said to be so. A TFDS set's
        # splits do not move: checked for a --split, against the set evaluated (built already; the
        # further sets of a run on several, voc/2007+voc/2012, are other examples).
        if choice.kind in cli.FOLDER_KINDS:
            trained = cli.load_training_source(args, choice, decode_images=False)
            cli.warn_if_not_held_out(trained, source)
            if "[" in str(choice.test_split):  # (a slice of the files the training split is the rest of)
                _warn_if_trained_on_other_files(args.model, trained)
        elif args.split:
            cli.warn_if_not_held_out(cli.load_source(args, choice, choice.train_split, decode_images=False), source)
    elif choice.kind in cli.FOLDER_KINDS and choice.kind == cfg.dataset and cfg.data_paths \
            and os.path.abspath(choice.name) == cfg.data_paths[0]:
        # The run's own files named again (--voc-dir of its folder with --split trainval, the
        # --coco-json it trained on): its training split read from them, as the run read it.
        cli.warn_if_not_held_out(cli.load_source(args, choice, cfg.train_split or None, decode_images=False), source)
    result, summary = evaluate(model, source, args.batch_size, coco=choice.coco, plot_dir=args.plots)
    print(metrics.format_table(result))
    print(headline(summary))
    if args.out:
        write_atomically(args.out, json.dumps(summary, indent=2))
        print(f"wrote {args.out}")
    return 0


def _warn_if_trained_on_other_files(model_path, trained):
    """A warning on stderr where the run's training split, read again, is not the files the run
    recorded training on (its ``checkpoint/state.json`` beside the model): files added or removed
    since then move a held-out slice (``all[90%:]``) onto images it trained on, which the two
    splits read today cannot show."""
    state = os.path.join(os.path.dirname(os.path.abspath(model_path)), "checkpoint", "state.json")
    try:
        with open(state) as f:
            data = json.load(f).get("data") or {}
    except (OSError, ValueError, AttributeError):  # no run folder beside the model: nothing to compare
        return
    if data.get("identity") not in (None, trained.identity):  # (its name may give the folder otherwise)
        print(f"warning: {trained.name} is not the files the model was trained on ({data.get('num_examples')} "
              f"images then, {trained.num_examples} now; {state}): with files added or removed since, the "
              "evaluation images may include training images", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
