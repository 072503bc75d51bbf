"""The exported SavedModel vs the Keras model in-process: latency on one 600 x 1000 image through
``serving_default`` and ``serving_encoded``, and the SavedModel's cold load time in a fresh process.

VGG-16 ``voc`` preset, random weights, 20 classes, 300 proposals. All latencies in one process,
interleaved in rounds, medians; the cold load (``tf.saved_model.load`` + first request) is timed
in a new Python process that imports TensorFlow only. ``--precision bfloat16``: the mixed
bfloat16 model's ``for_inference()`` form, as export.py writes it; ``--batch 4``: four images
a request (``model.detect`` gets them zero padded to 608 x 1008 with their sizes).

    python benchmarks/bench_serving.py [--rounds 5] [--precision float32|bfloat16] [--batch 1] [--out /tmp/bench_serving]
"""

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import interleaved_medians, machine  # noqa: E402

from keras_frcnn import build_models, preset  # noqa: E402
from keras_frcnn.config import MIXED_PRECISIONS  # noqa: E402
from keras_frcnn.export import export_saved_model  # noqa: E402

COLD = r"""
import sys, time
t0 = time.perf_counter()
import numpy as np, tensorflow as tf
t1 = time.perf_counter()
model = tf.saved_model.load(sys.argv[1])
t2 = time.perf_counter()
image = tf.constant(np.random.default_rng(0).integers(0, 256, (int(sys.argv[2]), 600, 1000, 3)), tf.uint8)
model.signatures["serving_default"](input_tensor=image)["num_detections"].numpy()
t3 = time.perf_counter()
print(f"{t1 - t0:.3f} {t2 - t1:.3f} {t3 - t2:.3f}")
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--out", help="export folder (default: a temporary one, removed after)")
    args = parser.parse_args()

    out = args.out or tempfile.mkdtemp(prefix="bench_serving_")
    shutil.rmtree(os.path.join(out, "frcnn"), ignore_errors=True)
    mixed = MIXED_PRECISIONS.get(args.precision, args.precision)
    model = build_models(dataclasses.replace(preset("voc"), precision=mixed), 20, weights=None).model
    model = model.for_inference()
    started = time.perf_counter()
    path = export_saved_model(model, os.path.join(out, "frcnn"), version=1)
    export_seconds = time.perf_counter() - started

    cold = subprocess.run([sys.executable, "-c", COLD, path, str(args.batch)], capture_output=True, text=True, check=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout.split()
    import_s, load_s, first_s = (float(v) for v in cold)

    loaded = tf.saved_model.load(path)
    image = np.random.default_rng(0).integers(0, 256, (args.batch, 600, 1000, 3)).astype(np.uint8)
    tensor = tf.constant(image)
    padded = tf.pad(tensor, [[0, 0], [0, 8], [0, 8], [0, 0]])
    sizes = tf.constant([[600, 1000]] * args.batch, tf.int32)
    jpeg = tf.stack([tf.io.encode_jpeg(one, quality=95) for one in image])
    keras_fn = tf.function(lambda x: model(x))
    detect_fn = tf.function(lambda x, s: model.detect(x, s))
    candidates = {
        "Keras model, tf.function(model)": lambda: keras_fn(tensor)["boxes"].numpy(),
        "Keras model.predict_on_batch": lambda: model.predict_on_batch(image),
        "Keras model.detect, padded batch": lambda: detect_fn(padded, sizes)["boxes"].numpy(),
        "SavedModel serving_default (uint8 tensor)": lambda: loaded.signatures["serving_default"](
            input_tensor=tensor)["detection_boxes"].numpy(),
        "SavedModel serving_encoded (JPEG bytes)": lambda: loaded.signatures["serving_encoded"](
            encoded_image_string_tensor=jpeg)["detection_boxes"].numpy(),
    }
    for fn in candidates.values():  # trace and warm up
        fn()
        fn()
    medians = interleaved_medians(candidates, args.rounds)

    print(f"machine: {machine()}")
    print(f"VGG-16 voc preset, {model.frcnn_config.precision}, 20 classes, random weights; "
          f"{args.batch} x 600 x 1000; median of {args.rounds} rounds")
    reference = medians["Keras model, tf.function(model)"]
    for name, median in medians.items():
        print(f"  {name:45s} {median * 1000:8.1f} ms  {median / reference:5.2f}x")
    print(f"export: {export_seconds:.1f} s; cold start in a fresh process: import tensorflow {import_s:.2f} s, "
          f"tf.saved_model.load {load_s:.2f} s, first request {first_s:.2f} s")
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
