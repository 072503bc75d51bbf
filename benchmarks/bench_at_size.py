"""Training at the size users run it: a VOC-sized folder (thousands of JPEG + XML scenes drawn by
the shapes generator) through ``--voc-dir``, not a test.

    python benchmarks/bench_at_size.py write DIR [--images 5000] [--test-images 500]
    python benchmarks/bench_at_size.py pipeline DIR [--passes 1]          # the input pipeline alone
    python benchmarks/bench_at_size.py old-pipeline DIR --old-checkout OLD  # the code before issue 12
    python benchmarks/bench_at_size.py train DIR [--out runs/at_size]     # one pass, shapes model

``write``: ``DIR/JPEGImages``, ``DIR/Annotations``, ``DIR/ImageSets/Main/{trainval,test}.txt``
(the folder is data: never commit it). ``pipeline``: the training stream of the ``shapes`` preset
over trainval at 2 images a step for ``--passes`` passes, in this process alone: distinct images
delivered, steps, wall time and the process's peak memory (the input pipeline's). ``old-pipeline``:
the same number of steps through the pipeline of an older checkout as its runner used it (a new
pipeline every 100-step chunk). ``train``: joint training of the shapes model for one pass over
trainval (``python train.py --voc-dir DIR --schedule joint`` with the steps of one pass), each
position of the stream recorded as the model consumes it; then the evaluation on test.
"""

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

BATCH = 2  # the shapes preset's images per step


def _write_one(args):
    root, number, seed = args
    from PIL import Image

    from keras_frcnn.data.shapes import SHAPE_CLASSES, render_example

    image, boxes, labels = render_example(np.random.default_rng([seed, number]))
    height, width = image.shape[:2]
    name = f"{number:06d}"
    Image.fromarray(image).save(os.path.join(root, "JPEGImages", name + ".jpg"), quality=90)
    objects = []
    for (ymin, xmin, ymax, xmax), label in zip(boxes, labels):
        # VOC numbers: the loaders read them as continuous pixel coordinates (TFDS's arithmetic).
        objects.append(f"<object><name>{SHAPE_CLASSES[label]}</name><difficult>0</difficult><bndbox>"
                       f"<xmin>{xmin:.2f}</xmin><ymin>{ymin:.2f}</ymin><xmax>{xmax:.2f}</xmax>"
                       f"<ymax>{ymax:.2f}</ymax></bndbox></object>")
    with open(os.path.join(root, "Annotations", name + ".xml"), "w") as f:
        f.write(f"<annotation><filename>{name}.jpg</filename><size><width>{width}</width>"
                f"<height>{height}</height><depth>3</depth></size>{''.join(objects)}</annotation>")
    return name


def write(root, images, test_images, seed=12):
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    started = time.perf_counter()
    with ProcessPoolExecutor() as pool:
        names = list(pool.map(_write_one, [(root, n, seed) for n in range(images + test_images)], chunksize=64))
    for split, part in (("trainval", names[:images]), ("test", names[images:])):
        with open(os.path.join(root, "ImageSets", "Main", split + ".txt"), "w") as f:
            f.write("".join(n + "\n" for n in part))
    size = sum(os.path.getsize(os.path.join(root, "JPEGImages", n + ".jpg")) for n in names)
    print(f"wrote {images} trainval + {test_images} test scenes to {root} ({size / 2**20:.0f} MB of JPEG) "
          f"in {time.perf_counter() - started:.0f} s")


def _source(root):
    from keras_frcnn.data import load_voc_folder

    return load_voc_folder(root, split="trainval", decode_images=False)


def pipeline(root, passes):
    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.config import preset
    from keras_frcnn.data import train_dataset

    source = _source(root)
    steps = math.ceil(passes * source.num_examples / BATCH)
    before = peak_rss_mb()  # TensorFlow and the listed source, before the pipeline runs
    started = time.perf_counter()
    seen = np.zeros(source.num_examples, np.int64)
    for batch in train_dataset(source, preset("shapes"), BATCH, seed=1, repeat=True).take(steps):
        np.add.at(seen, batch["index"].numpy(), 1)
    seconds = time.perf_counter() - started
    print(json.dumps({"what": "pipeline", "machine": machine(), "examples": source.num_examples, "steps": steps,
                      "distinct_images": int((seen > 0).sum()), "max_visits": int(seen.max()),
                      "min_visits": int(seen.min()), "seconds": round(seconds, 1),
                      "images_per_second": round(steps * BATCH / seconds, 1),
                      "peak_rss_mb_before": round(before), "peak_rss_mb": round(peak_rss_mb())}))


def old_pipeline(root, old_checkout, passes, chunk=100):
    """The training input of the checkout before issue 12, as its train.py and ScheduleRunner used
    it: images decoded by the source, a new ``train_dataset`` (a shuffle buffer of 1024 examples)
    for every chunk of 100 steps."""
    sys.path.insert(0, old_checkout)
    for name in [m for m in sys.modules if m.startswith("keras_frcnn")]:
        del sys.modules[name]
    from keras_frcnn.config import preset
    from keras_frcnn.data import load_voc_folder, train_dataset

    import keras_frcnn
    assert keras_frcnn.__file__.startswith(os.path.abspath(old_checkout)), keras_frcnn.__file__
    from benchmarks.common import peak_rss_mb

    source = load_voc_folder(root, split="trainval")  # decoded, as its train.py loaded sources
    steps = math.ceil(passes * source.num_examples / BATCH)
    before = peak_rss_mb()
    started = time.perf_counter()
    seen = np.zeros(source.num_examples, np.int64)
    for number in range(math.ceil(steps / chunk)):
        n = min(chunk, steps - number * chunk)
        for batch in train_dataset(source, preset("shapes"), BATCH, seed=1000003 + 10007 + number,
                                   repeat=True).take(n):
            np.add.at(seen, batch["index"].numpy(), 1)
    seconds = time.perf_counter() - started
    print(json.dumps({"what": "old pipeline (rebuilt every 100 steps)", "examples": source.num_examples,
                      "steps": steps, "distinct_images": int((seen > 0).sum()),
                      "highest_index_seen": int(np.nonzero(seen)[0].max()), "max_visits": int(seen.max()),
                      "seconds": round(seconds, 1), "peak_rss_mb_before": round(before),
                      "peak_rss_mb": round(peak_rss_mb())}))


def train(root, out):
    import dataclasses

    import keras
    import tensorflow as tf

    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.config import preset
    from keras_frcnn.data import load_voc_folder
    from keras_frcnn.evaluate import evaluate, headline
    from keras_frcnn.models import build_models
    from keras_frcnn.training import ScheduleRunner

    started = time.perf_counter()
    source = _source(root)
    test = load_voc_folder(root, split="test")
    steps = math.ceil(source.num_examples / BATCH)
    cfg = preset("shapes")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, schedule="joint"))
    fed = tf.Variable(tf.fill([steps * BATCH + 4096], tf.constant(-1, tf.int64)))

    def record(stage, dataset):
        def tap(batch):
            update = fed.scatter_nd_update(batch["position"][:, None], batch["index"])
            with tf.control_dependencies([update]):
                return {**batch, "index": tf.identity(batch["index"])}
        return dataset.map(tap)

    keras.utils.set_random_seed(cfg.train.seed)
    net = build_models(cfg, source.num_classes, class_names=source.class_names)
    runner = ScheduleRunner(net, source, cfg, out, steps=steps, verbose=2, dataset_hook=record)
    runner.run()
    train_seconds = runner.stage_seconds["joint"]
    consumed = fed.numpy()[:steps * BATCH]
    _, summary = evaluate(net.model, test)
    print(json.dumps({"what": "train", "machine": machine(), "examples": source.num_examples, "steps": steps,
                      "images_fed": int((consumed >= 0).sum()),
                      "distinct_images_fed": int(len(set(consumed[consumed >= 0].tolist()))),
                      "train_seconds": round(train_seconds, 1),
                      "seconds_per_step": round(train_seconds / steps, 3),
                      "wall_seconds": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": round(peak_rss_mb()), "mAP": summary["mAP"],
                      "headline": headline(summary)}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["write", "pipeline", "old-pipeline", "train"])
    parser.add_argument("dir")
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--test-images", type=int, default=500)
    parser.add_argument("--passes", type=float, default=1.0)
    parser.add_argument("--old-checkout")
    parser.add_argument("--out", default="runs/at_size")
    args = parser.parse_args()
    if args.what == "write":
        write(args.dir, args.images, args.test_images)
    elif args.what == "pipeline":
        pipeline(args.dir, args.passes)
    elif args.what == "old-pipeline":
        old_pipeline(args.dir, args.old_checkout, args.passes)
    else:
        train(args.dir, args.out)


if __name__ == "__main__":
    main()
