"""The test objects a model never finds (not a test): every ground-truth object with no detection
of its class at IoU >= 0.5, with its size, whether it touches the border, the best IoU its class
reached and the nearest detection of any class.

    python benchmarks/missed_objects.py runs/shapes/model.keras
"""

import argparse

import numpy as np

from keras_frcnn import cli
from keras_frcnn.data.shapes import load_shapes
from keras_frcnn.evaluate import collect
from keras_frcnn.metrics import pairwise_iou


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    model = cli.load_model(args.model)
    detections, ground_truth, sizes = collect(model, load_shapes(args.split))
    names = list(model.class_names)
    missed = 0
    for det, gt, (height, width) in zip(detections, ground_truth, sizes):
        for box, label in zip(gt["boxes"], gt["labels"]):
            overlaps = pairwise_iou(box[None], det["boxes"], inclusive_pixels=False)[0] \
                if len(det["boxes"]) else np.zeros(0)
            same = overlaps[det["labels"] == label]
            best = float(same.max()) if len(same) else 0.0
            if best >= 0.5:
                continue
            missed += 1
            edge = min(box[0], box[1], height - box[2], width - box[3]) < 1
            nearest = "none"
            if len(overlaps):
                k = int(np.argmax(overlaps))
                nearest = f"{names[det['labels'][k]]} IoU {overlaps[k]:.2f} score {det['scores'][k]:.2f}"
            print(f"{names[label]:10s} {box[2] - box[0]:5.1f} x {box[3] - box[1]:5.1f} px"
                  f"{' border' if edge else '       '}  best {names[label]} IoU {best:.2f};  nearest: {nearest}")
    total = sum(len(g["labels"]) for g in ground_truth)
    print(f"{missed} of {total} objects missed")


if __name__ == "__main__":
    main()
