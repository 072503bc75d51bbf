"""What RoIAlign pays to pool each image of a padded batch as its valid region alone.

    python benchmarks/bench_padded_align.py [--rounds 15]

``RoIPooling(mode="align")`` forward + backward (d(sum(pooled * upstream))/d(features)) on two
images, three ways in interleaved rounds: without ``image_info`` (the layer before it took one),
with ``image_info`` of two images filling the map (nothing to replicate: a ``tf.cond`` skips it),
and with the second image 3 rows and 2 columns of cells smaller than the map (each image's last
valid row and column copied past it, forward and backward). RoIs inside their own image, as
proposals are. Sizes: the shapes preset's map (ZF, stride 16), VGG-16's at 600 x 1000 and an FPN
P2 level at 800 x 1344 (stride 4).
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402

from keras_frcnn.roi_pooling import RoIPooling  # noqa: E402

CASES = (("shapes: 2 x 24 x 24 x 128, 128 RoIs an image", 24, 24, 128, 128, 16),
         ("VGG-16: 2 x 38 x 63 x 512, 64 RoIs an image", 38, 63, 512, 64, 16),
         ("FPN P2: 2 x 200 x 336 x 256, 128 RoIs an image", 200, 336, 256, 128, 4))


def case(height, width, channels, num_rois, stride, rounds, rng, pool_size=7):
    features = tf.constant(rng.standard_normal((2, height, width, channels)), tf.float32)
    full = [height * stride, width * stride]
    smaller = [full[0] - 3 * stride - 5, full[1] - 2 * stride - 3]
    corners = rng.uniform(0, 0.7, (2, num_rois, 2)) * np.array(full)
    sides = rng.uniform(16, 0.3 * np.array(full), (2, num_rois, 2))
    rois = np.concatenate([corners, corners + sides], -1)
    rois[1] = np.minimum(rois[1], smaller * 2)  # inside the smaller image
    rois = tf.constant(rois, tf.float32)
    upstream = tf.constant(rng.standard_normal((2, num_rois, pool_size, pool_size, channels)), tf.float32)
    layer = RoIPooling(pool_size, 1.0 / stride, "align")

    def step(*image_info):
        @tf.function
        def run(features):
            with tf.GradientTape() as tape:
                tape.watch(features)
                total = tf.reduce_sum(layer([features, rois, *image_info]) * upstream)
            return tape.gradient(total, features)
        return run

    ways = {"no image_info": step(),
            "images fill the map": step(tf.constant([full + [1.0]] * 2, tf.float32)),
            "padded batch": step(tf.constant([full + [1.0], smaller + [1.0]], tf.float32))}
    for run in ways.values():
        run(features)
        run(features)
    times = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            start = tf.timestamp()
            run(features).numpy()
            times[name].append(float(tf.timestamp() - start))
    return {name: float(np.median(t)) for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    rng = np.random.default_rng(0)
    for title, *shape in CASES:
        times = case(*shape, args.rounds, rng)
        before = times["no image_info"]
        print(f"{title}: " + ", ".join(f"{name} {t * 1e3:.1f} ms ({t / before:.2f}x)" for name, t in times.items()))


if __name__ == "__main__":
    main()
