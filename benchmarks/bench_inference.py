"""Inference time of the VGG-16 Faster R-CNN (random weights, 20 classes, 300 proposals) on
600 x 1000 images, next to the base-only forward (preprocessing + VGG-16 conv1_1..conv5_3), in
float32, mixed bfloat16 (float32 weights cast on every call) and bfloat16 (the mixed model's
``for_inference()`` form: bfloat16 weights, what export.py writes), all in one run (interleaved
rounds, medians). A base with batch norm (ResNet, MobileNet) also gives "float32 folded", the
float32 model's ``for_inference()`` form, and "bfloat16 unfolded" (``fold_batch_norm=False``):
each batch norm folded into its convolution or not.

    python benchmarks/bench_inference.py [--reps 5] [--batch 1] [--precisions float32,mixed_bfloat16,bfloat16] [--jit]
    python benchmarks/bench_inference.py --preset resnet50-voc   # another base (its conv5 head)

Peak memory: TensorFlow's CPU allocator peak during one call of each (``tf.config.experimental
.get_memory_info`` on "CPU:0"), reset before the call.
"""

import argparse
import dataclasses
import statistics
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_times, machine  # noqa: E402

from keras_frcnn import build_models, preset  # noqa: E402
from keras_frcnn.config import MIXED_PRECISIONS  # noqa: E402


def peak_mb(fn):
    try:
        tf.config.experimental.reset_memory_stats("CPU:0")
        fn()
        return tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
    except (ValueError, tf.errors.OpError):
        return float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--precisions", default="float32,mixed_bfloat16,bfloat16")
    parser.add_argument("--jit", action="store_true", help="also time the whole model under XLA")
    parser.add_argument("--preset", default="voc", help="the network's preset (default voc: VGG-16)")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)  # the same random weights every run
    images = tf.constant(np.random.default_rng(0).integers(0, 256, (args.batch, 600, 1000, 3)), tf.uint8)
    forms = {}
    for precision in args.precisions.split(","):
        mixed = MIXED_PRECISIONS.get(precision, precision)
        model = build_models(dataclasses.replace(preset(args.preset), precision=mixed), 20, weights=None).model
        if mixed != precision:
            forms[precision] = model.for_inference()
            unfolded = model.for_inference(fold_batch_norm=False)
            if unfolded.frcnn_config != forms[precision].frcnn_config:
                forms[f"{precision} unfolded"] = unfolded
        else:
            forms[precision] = model
            folded = model.for_inference() if precision == "float32" else model
            if folded is not model:
                forms["float32 folded"] = folded
    candidates = {}
    for form, model in forms.items():
        layers = model.layers_

        def base_only(x, layers=layers):
            processed, info = layers.preprocess(x)
            return layers.base([processed, info])

        base_fn = tf.function(base_only)
        whole_fn = tf.function(lambda x, model=model: model(x))
        # (a feature pyramid's base returns its levels)
        candidates[f"{form} base only"] = lambda f=base_fn: [t.numpy() for t in tf.nest.flatten(f(images))]
        candidates[f"{form} whole model"] = lambda f=whole_fn: f(images)["boxes"].numpy()
        if args.jit:
            jit_fn = tf.function(lambda x, model=model: model(x), jit_compile=True)
            candidates[f"{form} whole model, XLA"] = lambda f=jit_fn: f(images)["boxes"].numpy()

    peaks = {}
    for name, fn in candidates.items():  # trace, warm up, and the peak memory of one call
        fn()
        peaks[name] = peak_mb(fn)
    times = interleaved_times(candidates, args.reps)
    medians = {name: statistics.median(t) for name, t in times.items()}

    print(f"machine: {machine()}")
    test_proposals = preset(args.preset).rpn.post_nms_top_n[1]
    print(f"{args.preset}: batch {args.batch}, 600 x 1000 in, {test_proposals} proposals; median of {args.reps} interleaved rounds")
    fp32_whole = medians.get("float32 whole model")
    for name, seconds in medians.items():
        form = name.rsplit(" whole model", 1)[0].rsplit(" base only", 1)[0]
        # The ratio within each round, then its median: steadier than a ratio of medians when the
        # machine's speed drifts between rounds.
        ratios = [a / b for a, b in zip(times[name], times[f"{form} base only"])]
        line = (f"  {name:38s} {seconds * 1000:9.1f} ms  {statistics.median(ratios):5.2f}x its base "
                f"({min(ratios):.2f}-{max(ratios):.2f})")
        if fp32_whole:
            line += f"  {seconds / fp32_whole:5.2f}x fp32 whole"
        print(line + f"  peak {peaks[name]:7.0f} MB")


if __name__ == "__main__":
    main()
