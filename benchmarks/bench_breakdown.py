"""Per-stage inference times of the VGG-16 model (random weights, 20 classes) on 600 x 1000
images (one, or ``--batch N``): base, RPN head, proposals, RoI pooling, detector head,
postprocess; each stage compiled alone with tf.function, median of 5.

    python benchmarks/bench_breakdown.py [float32|mixed_bfloat16|bfloat16] [--batch 4]

``bfloat16`` is the mixed bfloat16 model's ``for_inference()`` form (bfloat16 weights).
"""

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from keras_frcnn import build_models, preset  # noqa: E402
from keras_frcnn.config import MIXED_PRECISIONS  # noqa: E402


def timed(fn, *args, reps=5):
    compiled = tf.function(fn)
    compiled(*args)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        tf.nest.map_structure(lambda x: x.numpy(), compiled(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("precision", nargs="?", default="float32", choices=["float32", "mixed_bfloat16", "bfloat16"])
    parser.add_argument("--batch", type=int, default=1, help="images a call (300 proposals each)")
    args = parser.parse_args()
    precision = args.precision
    keras.utils.set_random_seed(0)  # the same random weights every run
    mixed = MIXED_PRECISIONS.get(precision, precision)
    model = build_models(dataclasses.replace(preset("voc"), precision=mixed), 20, weights=None).model
    layers = (model if mixed == precision else model.for_inference()).layers_
    image = tf.constant(np.random.default_rng(0).integers(0, 256, (args.batch, 600, 1000, 3)), tf.uint8)
    processed, info = layers.preprocess(image)
    features = layers.base([processed, info])
    logits, deltas = layers.rpn_head(features)
    anchors = layers.anchors(features)
    proposals, _, count = layers.proposals([logits, deltas, anchors, info])
    pooled = layers.roi_pooling([features, proposals])
    class_logits, box_deltas = layers.detector_head(pooled)
    print(f"machine: {machine()}; {precision}; batch {args.batch}")
    rows = [
        ("preprocess", timed(lambda x: layers.preprocess(x), image)),
        ("base (VGG-16 convs)", timed(lambda x, i: layers.base([x, i]), processed, info)),
        ("RPN head", timed(lambda f: layers.rpn_head(f), features)),
        ("proposals (decode, NMS)", timed(lambda a, b, c, d: layers.proposals([a, b, c, d]),
                                          logits, deltas, anchors, info)),
        ("RoI pooling", timed(lambda f, p: layers.roi_pooling([f, p]), features, proposals)),
        ("detector head (fc6, fc7)", timed(lambda p: layers.detector_head(p), pooled)),
        ("postprocess (per-class NMS)", timed(lambda a, b, c, d, e: layers.detections(
            [a, b, c, d, e, tf.constant([[600, 1000]] * args.batch)]),
                                              class_logits, box_deltas, proposals, count, info)),
    ]
    base = rows[1][1]
    for name, ms in rows:
        print(f"  {name:30s} {ms:8.1f} ms  {ms / base * 100:5.1f} % of the base")


if __name__ == "__main__":
    main()
