"""The test objects a model never finds (not a test): every ground-truth object with no detection
of its class at IoU >= 0.5, with its size, whether it touches the border, how much of its box
another object's box shares, the best IoU its class reached, the best IoU of the RPN's test-time
proposals and the nearest detection of any class; then per class: the proposals' recall at IoU
0.5 and 0.7 and the detections' (same class, IoU 0.5), i.e. whether the RPN or the detector loses
the objects; and the VOC07 mAP of the images.

    python benchmarks/missed_objects.py runs/shapes/model.keras [--min-side 320 --max-side 480]
    python benchmarks/missed_objects.py runs/shapes/model.keras --heldout 500 --quiet

``--heldout N``: instead of the test split, N held-out images of the shapes training
distribution: train split images 500 .. 500 + N - 1 (by ``image/id``) of a (500 + N)-image build,
which a run on the default 500 training images never saw (steadier than the 100-image test split).
"""

import argparse
import collections

import numpy as np
import tensorflow as tf

from keras_frcnn import cli
from keras_frcnn.data.examples import DetectionSource
from keras_frcnn.data.pipeline import eval_dataset
from keras_frcnn.data.shapes import load_shapes
from keras_frcnn.metrics import evaluate_detections, pairwise_iou


def heldout_source(count, num_train=500, data_dir=None):
    """Shapes training-distribution images a run on the first ``num_train`` never saw: train split
    images ``num_train .. num_train + count - 1`` of a ``num_train + count``-image build (the same
    seed draws the same image for the same index in every build). Chosen by ``image/id``: TFDS
    stores a split in an order shuffled by key, so the build's first ``num_train`` examples in file
    order are not the training set (taking the rest of that order had 265 training images among
    its 500)."""
    full = load_shapes("train", data_dir=data_dir, num_train=num_train + count)
    dataset = full.dataset.filter(lambda example: example["image/id"] >= num_train)
    return DetectionSource(dataset=dataset, class_names=full.class_names, num_examples=count,
                           name=f"shapes train {num_train}..{num_train + count - 1}")


def box_intersection(a, b):
    """The area two ``[ymin, xmin, ymax, xmax]`` boxes share."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def best_overlaps(gt_boxes, boxes):
    """``[G]`` best IoU of each ground-truth box with any of ``boxes`` (0 without boxes)."""
    if not len(boxes):
        return np.zeros(len(gt_boxes))
    return pairwise_iou(gt_boxes, boxes, inclusive_pixels=False).max(axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--split", default="test")
    parser.add_argument("--heldout", type=int, help="N held-out shapes training-distribution images instead")
    parser.add_argument("--min-side", type=int, help="test scale (default: the model's)")
    parser.add_argument("--max-side", type=int)
    parser.add_argument("--quiet", action="store_true", help="the per-class table only")
    args = parser.parse_args()
    model = cli.load_model(args.model)
    if args.min_side:
        model = model.at_scale(args.min_side, args.max_side)
    if args.heldout:
        source = heldout_source(args.heldout)
    else:
        source = load_shapes(args.split)
    layers = model.layers_

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8),
                                  tf.TensorSpec([None, 2], tf.int32)], autograph=False)
    def run(images, sizes):
        processed, image_info = layers.preprocess([images, sizes])
        logits, deltas, anchors, levels = layers.rpn(layers.base([processed, image_info]))
        proposals, _, count = layers.propose(layers.proposals, logits, deltas, anchors, levels, image_info)
        return proposals, count, image_info, model.detect(images, sizes)

    names = list(model.class_names)
    counts = collections.defaultdict(lambda: np.zeros(4, int))  # objects, proposals @0.5, @0.7, detected
    missed, detections, ground_truth = 0, [], []
    for batch in eval_dataset(source):
        proposals, count, image_info, det = run(batch["images"], batch["image_size"])
        num_gt, num_det = int(batch["num_gt"][0]), int(det["num_detections"][0])
        gt_boxes = batch["gt_boxes"][0, :num_gt].numpy()
        gt_labels = batch["gt_classes"][0, :num_gt].numpy() - 1
        height, width = (int(v) for v in batch["image_size"][0].numpy())
        # Proposals are in resized-image pixels: back to the original image's.
        proposal_iou = best_overlaps(gt_boxes, proposals[0, :int(count[0])].numpy() / float(image_info[0, 2]))
        boxes, labels = det["boxes"][0, :num_det].numpy(), det["labels"][0, :num_det].numpy()
        scores = det["confidence"][0, :num_det].numpy()
        detections.append({"boxes": boxes, "scores": scores, "labels": labels})
        ground_truth.append({"boxes": gt_boxes, "labels": gt_labels,
                             "difficult": batch["gt_difficult"][0, :num_gt].numpy()})
        overlaps = pairwise_iou(gt_boxes, boxes, inclusive_pixels=False) if num_det else np.zeros((num_gt, 0))
        for i, (box, label) in enumerate(zip(gt_boxes, gt_labels)):
            same = overlaps[i][labels == label]
            best = float(same.max()) if len(same) else 0.0
            counts[names[label]] += (1, proposal_iou[i] >= 0.5, proposal_iou[i] >= 0.7, best >= 0.5)
            if best >= 0.5:
                continue
            missed += 1
            if args.quiet:
                continue
            edge = min(box[0], box[1], height - box[2], width - box[3]) < 1
            # The largest part of its box another object's box covers (shapes: later objects are
            # drawn over earlier ones, so an object may lie on another or under it).
            covered = max((box_intersection(box, other) for j, other in enumerate(gt_boxes) if j != i),
                          default=0.0) / max((box[2] - box[0]) * (box[3] - box[1]), 1e-9)
            nearest = "none"
            if num_det:
                k = int(np.argmax(overlaps[i]))
                nearest = f"{names[labels[k]]} IoU {overlaps[i][k]:.2f} score {scores[k]:.2f}"
            print(f"{names[label]:10s} {box[2] - box[0]:5.1f} x {box[3] - box[1]:5.1f} px"
                  f"{' border' if edge else '       '}  {100 * covered:3.0f} % shared with another box;  best "
                  f"{names[label]} IoU {best:.2f}; best proposal IoU {proposal_iou[i]:.2f};  nearest: {nearest}")
    total = sum(int(c[0]) for c in counts.values())
    print(f"{missed} of {total} objects missed on {source.name}")
    result = evaluate_detections(detections, ground_truth, names, inclusive_pixels=False)
    print(f"VOC07 mAP {result.mAP:.4f} (area mAP {result.mAP_area:.4f})")
    print(f"{'class':10s} {'objects':>7s} {'proposals@0.5':>13s} {'proposals@0.7':>13s} {'detected':>8s}")
    for name in names:
        c = counts[name]
        if c[0]:
            print(f"{name:10s} {c[0]:7d} {c[1] / c[0]:13.3f} {c[2] / c[0]:13.3f} {c[3] / c[0]:8.3f}")


if __name__ == "__main__":
    main()
