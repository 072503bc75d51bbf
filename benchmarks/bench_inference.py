"""Inference time of the VGG-16 Faster R-CNN (random weights, 20 classes) on one 600 x 1000 image
with 300 proposals, next to the base-only forward (preprocessing + VGG-16 conv1_1..conv5_3) in
the same run.

    python benchmarks/bench_inference.py [--reps 5] [--batch 1]
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_time  # noqa: E402

from keras_frcnn import build_models, preset  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--jit", action="store_true", help="also time the model under XLA")
    args = parser.parse_args()

    net = build_models(preset("voc"), 20, weights=None)
    model, layers = net.model, net.model.layers_
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (args.batch, 600, 1000, 3)), tf.uint8)

    @tf.function
    def base_only(x):
        processed, info = layers.preprocess(x)
        return layers.base([processed, info])

    whole = tf.function(lambda x: model(x))
    results = {
        "base only (preprocess + VGG-16 convs)": median_time(lambda: base_only(images).numpy(), args.reps),
        "whole model (300 proposals, postprocess)": median_time(
            lambda: whole(images)["boxes"].numpy(), args.reps),
    }
    if args.jit:
        compiled = tf.function(lambda x: model(x), jit_compile=True)
        results["whole model, jit_compile=True"] = median_time(
            lambda: compiled(images)["boxes"].numpy(), args.reps)

    print(f"machine: {machine()}")
    print(f"batch {args.batch}, 600 x 1000, median of {args.reps}")
    base = results["base only (preprocess + VGG-16 convs)"]
    for name, seconds in results.items():
        print(f"  {name:45s} {seconds * 1000:9.1f} ms   {seconds / base:5.2f}x base")


if __name__ == "__main__":
    main()
