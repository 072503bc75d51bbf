"""Evaluate a model: VOC07 11-point mAP, VOC2010+ area mAP, per-class AP and PR curves; COCO AP
through pycocotools for COCO data.

    python -m keras_frcnn.evaluate --model runs/shapes/model.keras [--dataset shapes] [--split test]
        [--voc-dir DIR | --coco-json FILE --coco-images DIR] [--out metrics.json] [--plots DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from keras_frcnn import cli


def collect(model, source, batch_size: int = 1):
    """Run ``model`` (a ``FasterRCNN``) over ``source`` -> (detections, ground_truth, image sizes),
    lists in the format of ``keras_frcnn.metrics`` (boxes in original-image pixels)."""
    import tensorflow as tf

    from keras_frcnn.data.pipeline import eval_dataset

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                                  tf.TensorSpec([None, 2], tf.int32)], autograph=False)
    def run(images, sizes):
        return model.detect(images, sizes)

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
                                 "difficult": batch["gt_difficult"][i, :g].numpy()})
            sizes.append(tuple(int(s) for s in batch["image_size"][i].numpy()))
    return detections, ground_truth, sizes


def evaluate(model, source, batch_size=1, inclusive_pixels=False, coco=False, plot_dir=None):
    """-> (``DetectionMetrics``, the ``metrics.json`` dict). ``inclusive_pixels``: the VOC
    devkit's IoU (for VOC data); ``coco``: add pycocotools' AP under ``"coco"``."""
    from keras_frcnn import metrics

    class_names = list(model.class_names)
    detections, ground_truth, sizes = collect(model, source, batch_size)
    result = metrics.evaluate_detections(detections, ground_truth, class_names,
                                         inclusive_pixels=inclusive_pixels)
    summary = metrics.metrics_json(result)
    if coco:
        summary["coco"] = metrics.coco_ap(detections, ground_truth, class_names, sizes)
    if plot_dir:
        summary["pr_curves"] = [os.fspath(p) for p in metrics.plot_pr_curves(result, plot_dir)]
    return result, summary


def main(argv=None):
    cli.quiet_tensorflow()
    parser = argparse.ArgumentParser(prog="python -m keras_frcnn.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a .keras file written by train.py")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--out", help="write metrics.json here")
    parser.add_argument("--plots", help="write a precision-recall PNG per class here")
    parser.add_argument("--batch-size", type=int, default=1)
    cli.add_data_args(parser)
    args = parser.parse_args(argv)

    import keras

    import keras_frcnn  # noqa: F401  (registers the layers)
    from keras_frcnn import metrics

    model = keras.models.load_model(args.model)
    default = model.frcnn_config.dataset
    source = cli.load_source(args, args.split, default)
    result, summary = evaluate(model, source, args.batch_size,
                               inclusive_pixels=cli.is_voc(args, default),
                               coco=cli.is_coco(args, default), plot_dir=args.plots)
    print(metrics.format_table(result))
    if "coco" in summary:
        print("COCO AP@[.5:.95] {:.3f}  AP50 {:.3f}".format(summary["coco"]["AP"], summary["coco"]["AP50"]))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
