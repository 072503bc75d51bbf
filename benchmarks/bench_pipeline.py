"""Throughput of the training input pipeline (images/s), not a test.

    python benchmarks/bench_pipeline.py [--seconds 10] [--warmup 30]

(a) the built-in shapes set with the ``shapes`` preset (built into a temporary directory first),
(b) 50 synthetic 1000 x 600 JPEGs in a temporary VOC folder with the ``voc`` preset (shorter side
600, longer <= 1000: these need no resize), and (c) 50 VOC-sized 500 x 375 JPEGs, which the ``voc``
preset resizes to 800 x 600, all at batch size 2, repeated and shuffled as in training. Each source is
measured with images left encoded until after the shuffle (``decode_images=False``, what training
uses) and decoded by the source. Prints the machine, the date and the TensorFlow version.
"""

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time

import numpy as np
import tensorflow as tf
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from keras_frcnn.config import preset  # noqa: E402
from keras_frcnn.data import load_shapes, load_voc_folder, train_dataset  # noqa: E402


def images_per_second(source, config, batch_size, seconds, warmup):
    """Batches drawn for at least ``seconds`` after ``warmup`` batches (tf.data autotunes first)."""
    dataset = train_dataset(source, config, batch_size=batch_size, seed=0, repeat=True)
    iterator = iter(dataset)
    for _ in range(warmup):
        next(iterator)
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        next(iterator)
        batches += 1
    return batches * batch_size / (time.perf_counter() - start)


def write_jpeg_folder(root, count=50, height=600, width=1000):
    """A VOC folder of photo-like JPEGs (smooth colour fields, grain, a few boxes): ~100-200 KB each."""
    rng = np.random.default_rng(0)
    for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(root, sub), exist_ok=True)
    ids = []
    for number in range(count):
        image_id = f"{number:06d}"
        grid = rng.random((height // 40 + 2, width // 40 + 2, 3)) * 255
        smooth = Image.fromarray(grid.astype(np.uint8)).resize((width, height), Image.BICUBIC)
        smooth = np.asarray(smooth, float)
        pixels = smooth + rng.normal(0, 12, size=(height, width, 1))
        objects = []
        for _ in range(int(rng.integers(1, 6))):
            w, h = rng.integers(20, min(width, height) * 2 // 3, size=2)
            x, y = rng.integers(0, width - w), rng.integers(0, height - h)
            pixels[y:y + h, x:x + w] = rng.uniform(0, 255, size=3)
            objects.append(f"<object><name>dog</name><difficult>0</difficult><bndbox><xmin>{x + 1}</xmin>"
                           f"<ymin>{y + 1}</ymin><xmax>{x + w}</xmax><ymax>{y + h}</ymax></bndbox></object>")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            os.path.join(root, "JPEGImages", image_id + ".jpg"), quality=90)
        with open(os.path.join(root, "Annotations", image_id + ".xml"), "w") as f:
            f.write(f"<annotation><filename>{image_id}.jpg</filename><size><width>{width}</width>"
                    f"<height>{height}</height><depth>3</depth></size>{''.join(objects)}</annotation>")
        ids.append(image_id)
    with open(os.path.join(root, "ImageSets", "Main", "trainval.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per measurement")
    parser.add_argument("--warmup", type=int, default=30, help="untimed batches first")
    parser.add_argument("--batch-size", type=int, default=2)
    args = parser.parse_args()

    print(f"machine: {platform.node()} {platform.machine()} {_cpu_model()}, "
          f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"python {platform.python_version()}, tensorflow {tf.__version__}, "
          f"GPUs: {len(tf.config.list_physical_devices('GPU'))}")
    print(f"batch size {args.batch_size}, {args.seconds:g} s timed after {args.warmup} warm-up batches")

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        load_shapes("train", data_dir=os.path.join(tmp, "tfds"))
        print(f"shapes: built 500 + 100 images in {time.perf_counter() - start:.1f} s")
        write_jpeg_folder(os.path.join(tmp, "voc"))
        write_jpeg_folder(os.path.join(tmp, "voc_small"), height=375, width=500)
        runs = [
            ("shapes (preset shapes, ~256 px -> trains at 256)", preset("shapes"),
             lambda decode: load_shapes("train", data_dir=os.path.join(tmp, "tfds"), decode_images=decode)),
            ("1000x600 JPEG (preset voc, -> 600x1000)", preset("voc"),
             lambda decode: load_voc_folder(os.path.join(tmp, "voc"), "trainval", decode_images=decode)),
            ("500x375 JPEG (preset voc, -> 800x600)", preset("voc"),
             lambda decode: load_voc_folder(os.path.join(tmp, "voc_small"), "trainval",
                                            decode_images=decode)),
        ]
        for name, config, load in runs:
            for decode in (False, True):
                rate = images_per_second(load(decode), config, args.batch_size, args.seconds, args.warmup)
                where = "decoded by the source" if decode else "encoded, decoded after shuffle"
                print(f"{name:46s} {where:32s} {rate:8.1f} images/s")


if __name__ == "__main__":
    main()
