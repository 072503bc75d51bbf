"""RoI pooling time and memory next to the VGG-16 conv base forward, in one run.

    python benchmarks/bench_roi_pooling.py [--rounds 7] [--reps 3]

Workload: 300 RoIs (proposal-like: log-uniform sizes 16..1000 px, inside the image) on a
``[1, 38, 63, 512]`` map (a 600 x 1000 image at stride 16), pool 7, spatial scale 1/16. The base is
the package's VGG-16 (``backbone.vgg16``, random weights) up to ``block5_conv3`` on a
``1 x 600 x 1000 x 3`` image (``keras.applications.VGG16``'s before 2026-12-01). Times are medians per call of a ``tf.function`` after a warm-up call,
measured in interleaved rounds (the base once, each RoI pooling variant ``--reps`` times per round)
so that other processes' load falls on all alike; "fwd+bwd" returns the pooled features and
d(sum(pooled * upstream))/d(features).
Peak memory is TensorFlow's CPU allocator peak during one call, above what was allocated before
(XLA's own buffers are not counted there, hence "-").
"""

import argparse
import datetime
import os
import platform
import time

import keras
import numpy as np
import tensorflow as tf

from keras_frcnn.backbone import vgg16
from keras_frcnn.roi_pooling import RoIPooling

MAP_SHAPE = (1, 38, 63, 512)
IMAGE_SHAPE = (1, 600, 1000, 3)
NUM_ROIS = 300
STRIDE = 16
POOL_SIZE = 7


def cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def proposal_like_rois(rng, num_rois, height, width):
    """``[1, R, 4]`` yxyx pixel boxes inside a ``height x width`` image."""
    sizes = np.exp(rng.uniform(np.log(16), np.log(1000), size=(num_rois, 2)))
    centres = rng.uniform(0, 1, size=(num_rois, 2)) * [height, width]
    lo = np.clip(centres - sizes / 2, 0, [height, width])
    hi = np.clip(centres + sizes / 2, 0, [height, width])
    return np.concatenate([lo, hi], axis=1)[None].astype(np.float32)


def run(fn):
    tf.nest.map_structure(lambda t: t.numpy(), fn())


def round_robin_median_ms(fns, rounds, calls_per_round):
    """Median ms per call of each ``fns[name]``, timed in interleaved rounds so that load from
    other processes falls on all of them alike. ``calls_per_round[name]`` calls per round."""
    for fn in fns.values():
        run(fn)  # trace / compile
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(calls_per_round[name]):
                start = time.perf_counter()
                run(fn)
                times[name].append(time.perf_counter() - start)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def peak_mb(fn):
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    run(fn)
    return (tf.config.experimental.get_memory_info("CPU:0")["peak"] - before) / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved rounds: the base once, each RoI pooling --reps times")
    parser.add_argument("--reps", type=int, default=3, help="RoI pooling calls per round")
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # one tf.function per variant is intended: no retracing notes

    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; {platform.platform()}")
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, NumPy {np.__version__}")
    print(f"load average: {os.getloadavg()[0]:.2f} (other processes skew the times)")

    rng = np.random.default_rng(0)
    features = tf.constant(rng.standard_normal(MAP_SHAPE).astype(np.float32))
    _, height, width, channels = MAP_SHAPE
    rois = tf.constant(proposal_like_rois(rng, NUM_ROIS, height * STRIDE, width * STRIDE))
    upstream = rng.standard_normal((1, NUM_ROIS, POOL_SIZE, POOL_SIZE, channels))
    upstream = tf.constant(upstream.astype(np.float32))
    image = tf.constant(rng.uniform(-120, 120, IMAGE_SHAPE).astype(np.float32))

    base = vgg16()  # the package's (Caffe's ceil-mode pools: 600 x 1000 -> 38 x 63, the map above)
    info = tf.constant([[IMAGE_SHAPE[1], IMAGE_SHAPE[2], 1.0]])
    functions = {"base": tf.function(lambda: base([image, info], training=False))}
    configs = [("max", 6, False), ("max", 6, True), ("max", 4, False), ("max", 4, True),
               ("align", None, False)]
    for mode, max_levels, jit in configs:
        options = {"max_levels": max_levels} if max_levels else {}
        layer = RoIPooling(POOL_SIZE, 1.0 / STRIDE, mode=mode, **options)

        def forward_backward(layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(features)
                pooled = layer([features, rois])
                loss = tf.reduce_sum(pooled * upstream)
            return pooled, tape.gradient(loss, features)

        key = (mode, max_levels, jit)
        functions[key + ("forward",)] = tf.function(
            lambda layer=layer: layer([features, rois]), jit_compile=jit)
        functions[key + ("fwd+bwd",)] = tf.function(forward_backward, jit_compile=jit)
    calls = {name: 1 if name == "base" else args.reps for name in functions}
    ms = round_robin_median_ms(functions, args.rounds, calls)

    print(f"\nVGG-16 conv base to block5_conv3, {IMAGE_SHAPE} -> "
          f"{tuple(functions['base']().shape)}, tf.function: {ms['base']:.0f} ms "
          f"(median of {args.rounds})")
    print(f"\nRoI pooling: {NUM_ROIS} RoIs on {MAP_SHAPE}, pool {POOL_SIZE}, scale 1/{STRIDE}, "
          f"median of {args.rounds * args.reps}, interleaved with the base")
    header = (f"{'mode':<6}{'max_levels':>11}{'compile':>13}{'forward ms':>12}{'% of base':>11}"
              f"{'fwd+bwd ms':>12}{'peak fwd MB':>13}{'peak fwd+bwd MB':>17}")
    print(header)
    print("-" * len(header))
    for key in configs:
        mode, max_levels, jit = key
        parts = [key + (part,) for part in ("forward", "fwd+bwd")]
        forward_ms, forward_backward_ms = (ms[part] for part in parts)
        memory = ["-", "-"] if jit else [f"{peak_mb(functions[part]):.0f}" for part in parts]
        print(f"{mode:<6}{max_levels or '-':>11}{'XLA' if jit else 'tf.function':>13}"
              f"{forward_ms:>12.1f}{100 * forward_ms / ms['base']:>10.1f}%"
              f"{forward_backward_ms:>12.1f}"
              f"{memory[0]:>13}{memory[1]:>17}")

    level_bytes = height * width * channels * 4
    output_bytes = NUM_ROIS * POOL_SIZE * POOL_SIZE * channels * 4
    print(f"\nmax mode tables per image: levels_y * levels_x * H * W * C * 4 B, "
          f"{level_bytes / 1e6:.1f} MB per level pair")
    for levels in (6, 4):
        levels_y = min(levels, height.bit_length())
        levels_x = min(levels, width.bit_length())
        print(f"  max_levels={levels}: {levels_y} x {levels_x} levels = "
              f"{levels_y * levels_x * level_bytes / 1e6:.0f} MB "
              f"(bins up to {2 ** levels} cells pooled exactly)")
    print(f"pooled output: {output_bytes / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
