"""The inference model's resize (``Preprocess`` to 600 / 1000) with its uint8 rows gathered as
int32 words (``preprocessing._gather_rows``, GPU kernels) against a plain uint8 gather (no GPU
kernel; the code before), interleaved in one run, median of 9.

    python benchmarks/bench_resize_gather.py
"""

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_times, machine  # noqa: E402

from keras_frcnn import preprocessing  # noqa: E402


def plain_gather(images, *rows):
    return [tf.gather(images, r, axis=1, batch_dims=1) for r in rows]


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    packed_gather = preprocessing._gather_rows
    preprocess = preprocessing.Preprocess(600, 1000)
    print(f"machine: {machine()}")
    for shape in ((1, 480, 640, 3), (4, 480, 640, 3), (1, 3000, 4000, 3), (1, 3000, 4001, 3)):
        images = tf.constant(np.random.default_rng(0).integers(0, 256, shape), tf.uint8)
        candidates = {}
        for name, gather in (("plain uint8 gather", plain_gather), ("int32 words", packed_gather)):
            preprocessing._gather_rows = gather  # read when the function is traced, just below
            fn = tf.function(lambda x: preprocess(x)[0])
            fn(images)
            candidates[name] = lambda fn=fn: fn(images).numpy()
        preprocessing._gather_rows = packed_gather
        times = interleaved_times(candidates, 9)
        print(f"  {' x '.join(map(str, shape[:3]))}: " + ", ".join(
            f"{name} {statistics.median(t) * 1000:.1f} ms" for name, t in times.items()))


if __name__ == "__main__":
    main()
