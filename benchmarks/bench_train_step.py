"""Training step rate of a preset's joint model (and its RPN / detector views) on synthetic
batches of the preset's image size, for comparison with the input pipeline's throughput.

    python benchmarks/bench_train_step.py --preset shapes
    python benchmarks/bench_train_step.py --preset voc --reps 3     # VGG-16 at 600 x 1000
    python benchmarks/bench_train_step.py --preset voc --views joint --precision mixed_bfloat16
"""

import argparse
import dataclasses
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, median_time  # noqa: E402

from keras_frcnn import build_models, preset  # noqa: E402
from keras_frcnn.optimizer import CaffeSGD  # noqa: E402


def synthetic_batch(cfg, batch, rng):
    side = cfg.image.train_min_sides[0] if cfg.image.train_min_sides else cfg.image.min_side  # the training scale
    h, w = side, cfg.image.max_side if cfg.name != "shapes" else side
    boxes = np.zeros((batch, 3, 4), np.float32)
    for i in range(batch):
        for j in range(3):
            y, x = rng.uniform(0, h * 0.6), rng.uniform(0, w * 0.6)
            boxes[i, j] = [y, x, y + rng.uniform(32, h * 0.4), x + rng.uniform(32, w * 0.4)]
    return {
        "images": rng.integers(0, 256, (batch, h, w, 3)).astype(np.uint8),
        "image_info": np.tile([[h, w, 1.0]], (batch, 1)).astype(np.float32),
        "gt_boxes": boxes, "gt_classes": rng.integers(1, 5, (batch, 3)).astype(np.int32),
        "num_gt": np.full((batch,), 3, np.int32),
        "proposals": np.tile(boxes, (1, 50, 1)) + rng.normal(0, 8, (batch, 150, 4)).astype(np.float32),
        "num_proposals": np.full((batch,), 150, np.int32),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="shapes")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--views", default="joint,rpn,detector")
    parser.add_argument("--jit", action="store_true", help="compile the train steps with XLA")
    parser.add_argument("--precision", default="float32", help="float32, mixed_bfloat16, mixed_float16, auto")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)  # the same random weights every run
    cfg = dataclasses.replace(preset(args.preset), precision=args.precision)
    net = build_models(cfg, 20, weights=None)
    rng = np.random.default_rng(0)
    print(f"machine: {machine()}")
    for view in args.views.split(","):
        images = cfg.train.detector_batch_images if view == "detector" else cfg.train.rpn_batch_images
        batch = synthetic_batch(cfg, images, rng)
        model = net.prepare(view, CaffeSGD(1e-4, momentum=0.9), jit_compile=args.jit)
        model.make_train_function()
        data = {k: tf.constant(v) for k, v in batch.items()}
        step = model.train_function
        iterator = iter(tf.data.Dataset.from_tensors(data).repeat())
        seconds = median_time(lambda: float(step(iterator)["loss"]), reps=args.reps, warmup=args.warmup)
        tf.config.experimental.reset_memory_stats("CPU:0")
        float(step(iterator)["loss"])
        peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] / 2**20
        print(f"  {args.preset:7s} {view:9s} {args.precision:14s} jit={args.jit!s:5s} {images} images of "
              f"{batch['images'].shape[1]}x{batch['images'].shape[2]}: {seconds * 1000:8.1f} ms/step = "
              f"{images / seconds:7.2f} images/s, peak {peak:.0f} MB")


if __name__ == "__main__":
    main()
