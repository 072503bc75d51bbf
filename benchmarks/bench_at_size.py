"""Training at the size users run it: a VOC-sized folder (thousands of JPEG + XML scenes drawn by
the shapes generator) through ``--voc-dir``, not a test.

    python benchmarks/bench_at_size.py write DIR [--images 5000] [--test-images 500]
    python benchmarks/bench_at_size.py write-coco DIR [--images 3000] [--test-images 300] [--faults]
    python benchmarks/bench_at_size.py pipeline DIR [--passes 1]          # the input pipeline alone
    python benchmarks/bench_at_size.py old-pipeline DIR --old-checkout OLD  # the code before issue 12
    python benchmarks/bench_at_size.py train DIR [--out runs/at_size]     # one pass, shapes model
    python benchmarks/bench_at_size.py tfds-stream DIR [--images 5000]    # a TFDS set's stream
    python benchmarks/bench_at_size.py coco-scale DIR [--images 118287]   # COCO train2017's size
    python benchmarks/bench_at_size.py voc07-12 DIR                       # two folders of VOC's sizes
    python benchmarks/bench_at_size.py flat DIR [--images 20000]          # a LabelImg / Roboflow folder
    python benchmarks/bench_at_size.py yolo DIR [--images 20000]          # the YOLO format (Ultralytics)
    python benchmarks/bench_at_size.py tfrecord DIR [--images 20000]      # TF OD API TFRecord files
    python benchmarks/bench_at_size.py tfrecord-scale DIR [--images 118287]  # COCO train2017's size, as records
    python benchmarks/bench_at_size.py csv DIR [--images 20000]           # detection CSV files
    python benchmarks/bench_at_size.py labelme DIR [--images 20000]       # LabelMe JSON files
    python benchmarks/bench_at_size.py via DIR [--images 20000]           # VGG Image Annotator JSON
    python benchmarks/bench_at_size.py coco-joined DIR [--images 10000]   # two COCO JSON files together
    python benchmarks/bench_at_size.py cvat DIR [--images 20000]          # CVAT for images 1.1 (a project)

``write``: ``DIR/JPEGImages``, ``DIR/Annotations``, ``DIR/ImageSets/Main/{trainval,test}.txt``
(the folder is data: never commit it). ``write-coco``: ``DIR/{train,val}.json`` and their images in
``DIR/train``, ``DIR/val`` as exporters write them (category ids 3 / 7 / 12 / 90, image ids with
gaps, half the files in a subfolder, polygon segmentations with their own areas); ``--faults`` adds
to train.json what real exports hold (a missing and a corrupt image, an annotation of an unknown
image and one of an unknown category, a zero-width and a missing bbox, a box reaching outside, a
crowd region, a wrong stated size, an image without annotations, a greyscale image, a phone photo
with EXIF orientation 6 annotated as shown). Train on it with ``python train.py --coco-json
DIR/train.json --coco-images DIR/train --coco-val-json DIR/val.json --coco-val-images DIR/val``. ``pipeline``: the training stream of the ``shapes`` preset
over trainval at 2 images a step for ``--passes`` passes, in this process alone: distinct images
delivered, steps, wall time and the process's peak memory (the input pipeline's). ``old-pipeline``:
the same number of steps through the pipeline of an older checkout as its runner used it (a new
pipeline every 100-step chunk). ``train``: joint training of the shapes model for one pass over
trainval (``python train.py --voc-dir DIR --schedule joint`` with the steps of one pass), each
position of the stream recorded as the model consumes it; then the evaluation on test.
``tfds-stream``: the TFDS path (no random access: a shuffle buffer of encoded records) on the
shapes set built with ``--images`` training images under the TFDS data directory DIR: three passes
of the training stream (each must visit every example once), how far an example moves from one
pass to the next, and a stream resumed mid-pass against the uninterrupted one. ``coco-scale``: a
COCO JSON of train2017's size (118,287 images, ~7 annotations each, 80 category ids of 1..90 with
polygons) whose images are hard links to 50 distinct 640 x 480 JPEGs (~100 KB, COCO's own average
is ~160 KB): how long ``load_coco_json`` takes (the JSON, every image checked, the records), its
memory, and the training stream's first batch and rate. ``voc07-12``: ``DIR/VOC2007`` (5,011
trainval + 4,952 test scenes) and ``DIR/VOC2012`` (train 5,717, val 5,823, and 5,585 annotated
images in no Main split, as VOC 2012's action and layout images) trained on together as
``train.py --voc-dir DIR/VOC2007 --voc-dir DIR/VOC2012`` reads them: load time, counts, one pass of
the training stream (every image once? VOC 2012's share in each tenth of the pass), and the same
two sets read without random access (TFDS's path: a shuffle buffer of 1,024), interleaved as
``data.combined`` does and, for comparison, simply appended. ``flat``: ``--images`` scenes (default
20,000) as LabelImg and Roboflow's "Pascal VOC" export keep them, each XML beside its JPEG in one
folder with no split files (``DIR/flat``, hard links to the scenes of ``DIR/voc``): the splits
``train.py --voc-dir DIR/flat`` chooses, their load time against the same files in VOC's layout,
files shared between them, and one pass of the training stream. ``yolo``: the same ``--images``
scenes in Ultralytics' layout (``DIR/yolo/images/{train,val}`` hard links, ``labels/`` converted
from the XML files, the last tenth as val, ``data.yaml``): the splits ``--yolo-data`` chooses, load
time, every box against the VOC folder's (continuous pixels), and one pass of the training stream.
``tfrecord``: the same scenes as the TF Object Detection API's scripts write them (``DIR/tfrecord``:
``scenes_train.record-000NN-of-00010``, records dealt to the shards in turn as its COCO script
does, the last tenth in ``scenes_val.record``, a ``label_map.pbtxt``) and as one file in name
order (``DIR/tfrecord_one/scenes_train.record``, as its Pascal script writes one): the splits
``--tfrecord`` chooses, load time (every record checked, then cached), every box against the VOC
folder's, and for each layout one pass of the training stream (every record once?) and how far its
order is from the files' (Spearman's correlation of stream position and record number: about 0
for a random order, 1 for the files' own); ``--gzip`` writes and reads the files GZIP-compressed
(``DIR/tfrecord_gzip``, ``DIR/tfrecord_one_gzip``: no random access). ``tfrecord-scale``: the
``coco-scale`` set as the TF OD API's COCO script writes it: 118,287 records (the 50 distinct JPEGs
stored in them, ~12 GB) dealt to 100 shards, classes as text and ids of 1..90 with a label map:
the first load (every record checked), the load again (cached), the training stream's first batch
and rate, memory.
"""

import argparse
import io
import dataclasses
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


COCO_CATEGORY_IDS = (3, 7, 12, 90)  # SHAPE_CLASSES' ids: COCO's have gaps too


def _write_coco_one(args):
    folder, number, seed, image_id = args
    from PIL import Image

    from keras_frcnn.data.shapes import render_example

    image, boxes, labels = render_example(np.random.default_rng([seed, number]))
    height, width = image.shape[:2]
    name = f"{image_id:012d}.jpg" if number % 2 else f"sub/{image_id:012d}.jpg"
    Image.fromarray(image).save(os.path.join(folder, name), quality=90)
    annotations = []
    for (ymin, xmin, ymax, xmax), label in zip(boxes, labels):
        w, h = float(xmax - xmin), float(ymax - ymin)
        annotations.append({"image_id": image_id, "category_id": COCO_CATEGORY_IDS[label],
                            "bbox": [round(float(xmin), 2), round(float(ymin), 2), round(w, 2), round(h, 2)],
                            "area": round(0.8 * w * h, 2), "iscrowd": 0,
                            "segmentation": [[float(xmin), float(ymin), float(xmax), float(ymin),
                                              float(xmax), float(ymax), float(xmin), float(ymax)]]})
    return {"id": image_id, "file_name": name, "height": height, "width": width}, annotations


def _coco_faults(folder, images, annotations):
    """What real exports hold, added to one split (each one is warned about and counted)."""
    from PIL import Image

    image_at = {image["id"]: image for image in images}
    first = [image["id"] for image in images[:12]]
    os.remove(os.path.join(folder, image_at[first[0]]["file_name"]))                      # missing image
    with open(os.path.join(folder, image_at[first[1]]["file_name"]), "wb") as f:         # corrupt image
        f.write(b"\xff\xd8\xff\xe0 cut short")
    extra = [
        {"image_id": 10**9, "category_id": 3, "bbox": [1, 1, 5, 5]},                       # unknown image
        {"image_id": first[2], "category_id": 55, "bbox": [1, 1, 5, 5]},                   # unknown category
        {"image_id": first[3], "category_id": 3, "bbox": [1, 1, 0, 5]},                    # zero width
        {"image_id": first[4], "category_id": 7, "bbox": None},                            # no bbox
        {"image_id": first[5], "category_id": 7, "bbox": [-5, -5, 30, 30]},                # reaches outside
        {"image_id": first[6], "category_id": 7, "bbox": [10, 10, 40, 40], "iscrowd": 1,   # a crowd region
         "segmentation": {"counts": [0, 10], "size": [image_at[first[6]]["height"], image_at[first[6]]["width"]]}},
    ]
    annotations += [{"area": 100.0, "iscrowd": 0, **a} for a in extra]
    image_at[first[7]]["height"] += 1                                                      # wrong stated size
    Image.fromarray(np.full((300, 400, 3), 128, np.uint8)).save(os.path.join(folder, "empty.png"))
    images.append({"id": 1, "file_name": "empty.png", "height": 300, "width": 400})       # no annotations
    Image.fromarray(np.full((300, 400), 90, np.uint8)).save(os.path.join(folder, "grey.jpg"))
    images.append({"id": 2, "file_name": "grey.jpg", "height": 300, "width": 400})        # greyscale
    annotations.append({"image_id": 2, "category_id": 12, "bbox": [100, 100, 50, 50], "area": 2000, "iscrowd": 0})
    # A phone photo stored 400 x 300 with EXIF orientation 6 (shown turned to 300 x 400), its square
    # annotated as shown: stored rows 50-149, columns 200-299 are shown at x 150-249, y 200-299.
    pixels = np.full((300, 400, 3), 40, np.uint8)
    pixels[50:150, 200:300] = 220
    photo = Image.fromarray(pixels)
    exif = photo.getexif()
    exif[0x0112] = 6
    photo.save(os.path.join(folder, "phone.jpg"), exif=exif, quality=95)
    images.append({"id": 4, "file_name": "phone.jpg", "height": 400, "width": 300})
    annotations.append({"image_id": 4, "category_id": 7, "bbox": [150, 200, 100, 100], "area": 10000, "iscrowd": 0})


def write_coco(root, images, test_images, faults=False, seed=13):
    started = time.perf_counter()
    for split, count, first_id in (("train", images, 1000), ("val", test_images, 10**6)):
        folder = os.path.join(root, split)
        os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
        jobs = [(folder, n, seed + (split == "val"), first_id + 3 * n) for n in range(count)]
        with ProcessPoolExecutor() as pool:
            written = list(pool.map(_write_coco_one, jobs, chunksize=64))
        entries = [image for image, _ in written]
        annotations = [a for _, image_annotations in written for a in image_annotations]
        if faults and split == "train":
            _coco_faults(folder, entries, annotations)
        for number, annotation in enumerate(annotations, start=1):
            annotation["id"] = number
        categories = [{"id": i, "name": n, "supercategory": "shape"}
                      for i, n in zip(COCO_CATEGORY_IDS, ("circle", "square", "triangle", "cross"))]
        with open(os.path.join(root, split + ".json"), "w") as f:
            json.dump({"info": {"description": "shapes as COCO"}, "licenses": [], "images": entries,
                       "annotations": annotations, "categories": categories}, f)
        print(f"{split}: {len(entries)} images, {len(annotations)} annotations")
    print(f"wrote {root} in {time.perf_counter() - started:.0f} s")


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


def tfds_stream(data_dir, images, start_fraction=1.469):
    from benchmarks.common import machine
    from keras_frcnn.data import load_shapes
    from keras_frcnn.data.pipeline import SHUFFLE_BUFFER, example_stream

    source = load_shapes("train", data_dir=data_dir, num_train=images, num_test=100, decode_images=False)
    n = source.num_examples

    def indices(start, count):
        stream = example_stream(source, seed=5, start=start).take(count)
        return [int(i) for i in stream.map(lambda example: example["index"])]

    started = time.perf_counter()
    every = indices(0, 3 * n)
    seconds = time.perf_counter() - started
    passes = [every[p * n:(p + 1) * n] for p in range(3)]
    place = [{index: k for k, index in enumerate(order)} for order in passes]
    moves = np.array([abs(place[0][i] - place[1][i]) for i in range(n)])
    start = int(start_fraction * n)  # mid-way through the second pass
    print(json.dumps({
        "what": "tfds-stream", "machine": machine(), "examples": n, "shuffle_buffer": SHUFFLE_BUFFER,
        "seconds_for_3_passes": round(seconds, 1),
        "distinct_per_pass": [len(set(order)) for order in passes],
        "move_between_passes_median": float(np.median(moves)), "p90": float(np.percentile(moves, 90)),
        "first_half_in_both_first_halves": len(set(passes[0][:n // 2]) & set(passes[1][:n // 2])),
        "of": n // 2, "resumed_at": start,
        "resumed_stream_equal": indices(start, 2 * n - start) == every[start:2 * n]}))


def _stream_rate(source, batches=200):
    """The training stream of the shapes preset over ``source``: seconds to its first batch, then
    images a second over ``batches`` batches."""
    from keras_frcnn.config import preset
    from keras_frcnn.data import train_dataset

    started = time.perf_counter()
    stream = iter(train_dataset(source, preset("shapes"), batch_size=BATCH, seed=0, repeat=True))
    next(stream)
    first = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return round(first, 1), round(batches * BATCH / (time.perf_counter() - started))


def coco_scale(root, images):
    from PIL import Image, ImageFilter

    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.data import load_coco_json

    rng = np.random.default_rng(0)
    json_path, image_dir = os.path.join(root, "instances_train.json"), os.path.join(root, "images")
    if not os.path.exists(json_path):
        os.makedirs(image_dir, exist_ok=True)
        distinct = []
        for n in range(50):
            noise = Image.fromarray((rng.random((480, 640, 3)) * 255).astype(np.uint8))
            distinct.append(os.path.join(root, f"distinct_{n}.jpg"))
            noise.filter(ImageFilter.GaussianBlur(1.2)).save(distinct[-1], quality=90)
        ids = [c for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
        entries, annotations = [], []
        for n in range(images):
            name = f"{n + 1:012d}.jpg"
            os.link(distinct[n % 50], os.path.join(image_dir, name))
            entries.append({"id": n + 1, "file_name": name, "height": 480, "width": 640})
            for _ in range(int(rng.integers(1, 14))):
                x, y = rng.uniform(0, 600), rng.uniform(0, 440)
                w, h = rng.uniform(2, 640 - x), rng.uniform(2, 480 - y)
                annotations.append({"id": len(annotations) + 1, "image_id": n + 1, "category_id": int(rng.choice(ids)),
                                    "bbox": [round(v, 2) for v in (x, y, w, h)], "area": round(0.7 * w * h, 2),
                                    "iscrowd": int(rng.random() < 0.01),
                                    "segmentation": [[round(v, 2) for v in (x, y, x + w, y, x + w, y + h)]]})
        with open(json_path, "w") as f:
            json.dump({"images": entries, "annotations": annotations,
                       "categories": [{"id": c, "name": f"class{c}"} for c in ids]}, f)
    started = time.perf_counter()
    source = load_coco_json(json_path, image_dir, decode_images=False)
    loaded = time.perf_counter() - started
    first, rate = _stream_rate(source)
    print(json.dumps({"what": "coco-scale", "machine": machine(), "json_mb": round(os.path.getsize(json_path) / 2**20),
                      "images": source.num_examples, "objects": source.num_objects,
                      "load_seconds": round(loaded, 1), "first_batch_seconds": round(first, 1),
                      "images_per_second": rate,
                      "peak_rss_mb": round(peak_rss_mb())}))


def tfrecord_scale(root, images, shards=100):
    import tensorflow as tf
    from PIL import Image, ImageFilter

    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.data import load_tfrecord

    rng = np.random.default_rng(0)
    folder = os.path.join(root, "records")
    ids = [c for c in range(1, 91) if c not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
    if not os.path.isdir(folder):
        started = time.perf_counter()
        os.makedirs(folder)
        distinct = []
        for _ in range(50):
            noise = Image.fromarray((rng.random((480, 640, 3)) * 255).astype(np.uint8))
            buffer = io.BytesIO()
            noise.filter(ImageFilter.GaussianBlur(1.2)).save(buffer, format="JPEG", quality=90)
            distinct.append(buffer.getvalue())

        def feature(kind, values):
            return tf.train.Feature(**{kind: {"bytes_list": tf.train.BytesList, "float_list": tf.train.FloatList,
                                              "int64_list": tf.train.Int64List}[kind](value=values)})

        writers = [tf.io.TFRecordWriter(os.path.join(folder, f"coco_train.record-{k:05d}-of-{shards:05d}"))
                   for k in range(shards)]
        for n in range(images):
            count = int(rng.integers(1, 14))
            x, y = rng.uniform(0, 600, count), rng.uniform(0, 440, count)
            w, h = rng.uniform(2, 640 - x), rng.uniform(2, 480 - y)
            classes = rng.choice(ids, count)
            example = tf.train.Example(features=tf.train.Features(feature={
                "image/encoded": feature("bytes_list", [distinct[n % 50]]),
                "image/filename": feature("bytes_list", [f"{n + 1:012d}.jpg".encode()]),
                "image/source_id": feature("bytes_list", [str(n + 1).encode()]),
                "image/height": feature("int64_list", [480]), "image/width": feature("int64_list", [640]),
                "image/object/bbox/xmin": feature("float_list", x / 640), "image/object/bbox/xmax": feature("float_list", (x + w) / 640),
                "image/object/bbox/ymin": feature("float_list", y / 480), "image/object/bbox/ymax": feature("float_list", (y + h) / 480),
                "image/object/class/text": feature("bytes_list", [f"class{c}".encode() for c in classes]),
                "image/object/class/label": feature("int64_list", classes.tolist()),
                "image/object/is_crowd": feature("int64_list", (rng.random(count) < 0.01).astype(int).tolist()),
                "image/object/area": feature("float_list", 0.7 * w * h)}))
            writers[n % shards].write(example.SerializeToString())
        for writer in writers:
            writer.close()
        with open(os.path.join(folder, "label_map.pbtxt"), "w") as f:
            f.write("".join(f'item {{ id: {c} name: "class{c}" }}\n' for c in ids))
        print(f"wrote the records in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
    started = time.perf_counter()
    source = load_tfrecord(folder, "train", decode_images=False)
    loaded = time.perf_counter() - started
    rss_after_load = peak_rss_mb()
    started = time.perf_counter()
    load_tfrecord(folder, "train", decode_images=False)
    cached = time.perf_counter() - started
    first, rate = _stream_rate(source)
    print(json.dumps({"what": "tfrecord-scale", "machine": machine(), "records_gb": round(size / 2**30, 1),
                      "files": shards, "images": source.num_examples, "objects": source.num_objects,
                      "classes": len(source.class_names), "problems": source.problems,
                      "random_access": source.example_at is not None,
                      "load_seconds": round(loaded, 1), "load_seconds_cached": round(cached, 1),
                      "peak_rss_mb_after_load": round(rss_after_load), "first_batch_seconds": round(first, 1),
                      "images_per_second": rate,
                      "peak_rss_mb": round(peak_rss_mb())}))


def voc07_12(root):
    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn import cli
    from keras_frcnn.config import preset
    from keras_frcnn.data import train_dataset
    from keras_frcnn.data.combined import combine_sources, interleaving_order
    from keras_frcnn.data.pipeline import example_stream

    folders = [os.path.join(root, "VOC2007"), os.path.join(root, "VOC2012")]
    if not os.path.isdir(folders[0]):
        write(folders[0], 5011, 4952, seed=7)
    if not os.path.isdir(folders[1]):
        write(folders[1], 11540, 5585, seed=12)
        main = os.path.join(folders[1], "ImageSets", "Main")
        with open(os.path.join(main, "trainval.txt")) as f:
            ids = f.read().split()
        for split, part in (("train", ids[:5717]), ("val", ids[5717:])):
            with open(os.path.join(main, split + ".txt"), "w") as f:
                f.write("".join(n + "\n" for n in part))
        os.remove(os.path.join(main, "test.txt"))  # its 5,585 images: annotated, in no Main split
    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    args = parser.parse_args(["--voc-dir", folders[0], "--voc-dir", folders[1]])
    started = time.perf_counter()
    choice = cli.choose_data(args, preset("shapes"))
    source = cli.load_training_source(args, choice, decode_images=False)
    test_source = cli.load_source(args, choice, choice.test_split, decode_images=False)
    loaded = time.perf_counter() - started
    parts = [cli.load_source(args, choice, choice.train_split, decode_images=False),
             cli.load_source(args, dataclasses.replace(choice, name=choice.more[0][0]), choice.more[0][1],
                             decode_images=False)]
    first = parts[0].num_examples

    def shares(from_second):  # VOC 2012's share of each tenth of a pass
        return [round(float(np.mean(part)), 3) for part in np.array_split(np.asarray(from_second), 10)]

    started = time.perf_counter()
    seen = [int(i) for batch in train_dataset(source, preset("shapes"), batch_size=BATCH, seed=0)
            for i in batch["index"]]
    pass_seconds = time.perf_counter() - started
    result = {"what": "voc07-12", "machine": machine(),
              "choice": [choice.train_split, choice.test_split, [list(m) for m in choice.more]],
              "train_images": source.num_examples, "test_images": test_source.num_examples,
              "shared_files": len(source.files & test_source.files), "load_seconds": round(loaded, 1),
              "pass": {"images": len(seen), "distinct": len(set(seen)), "seconds": round(pass_seconds, 1),
                       "voc2012_share_per_tenth": shares([i >= first for i in seen])},
              "expected_share": round((source.num_examples - first) / source.num_examples, 3)}
    # TFDS's path (no random access), the two ways of joining: which set each stream index is from.
    unindexed = [dataclasses.replace(part, example_at=None) for part in parts]
    interleaved = combine_sources(unindexed)
    appended = dataclasses.replace(interleaved, dataset=unindexed[0].dataset.concatenate(unindexed[1].dataset))
    from_second = {"tfds_path_interleaved": interleaving_order([first, parts[1].num_examples]) == 1,
                   "tfds_path_appended": np.arange(source.num_examples) >= first}
    for name, combined in (("tfds_path_interleaved", interleaved), ("tfds_path_appended", appended)):
        indices = [int(i) for i in example_stream(combined, seed=0, repeat=False).map(
            lambda e: e["index"]).as_numpy_iterator()]
        result[name] = {"distinct": len(set(indices)), "voc2012_share_per_tenth": shares(from_second[name][indices])}
    result["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(result))


def coco_joined(root, images):
    """``train.py --coco-json A --coco-json B`` at size: two COCO exports (``write-coco``, other
    seeds) of ``images`` training images each, loaded as train.py loads them; load time, counts, one
    pass of the training stream (every image once? B's share in each tenth)."""
    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn import cli
    from keras_frcnn.config import preset
    from keras_frcnn.data import train_dataset

    folders = [os.path.join(root, name) for name in ("a", "b")]
    for folder, seed in zip(folders, (13, 31)):
        if not os.path.isfile(os.path.join(folder, "train.json")):
            write_coco(folder, images, 300, seed=seed)
    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    args = parser.parse_args([part for folder in folders for part in (
        "--coco-json", os.path.join(folder, "train.json"), "--coco-images", os.path.join(folder, "train"))])
    started = time.perf_counter()
    choice = cli.choose_data(args, preset("shapes"))
    source = cli.load_training_source(args, choice, decode_images=False)
    loaded = time.perf_counter() - started
    first = cli.load_source(args, choice, None, decode_images=False).num_examples
    started = time.perf_counter()
    seen = [int(i) for batch in train_dataset(source, preset("shapes"), batch_size=BATCH, seed=0)
            for i in batch["index"]]
    shares = [round(float(np.mean(part)), 3) for part in np.array_split(np.asarray(seen) >= first, 10)]
    print(json.dumps({"what": "coco-joined", "machine": machine(), "name": source.name,
                      "train_images": source.num_examples, "first_file_images": first,
                      "objects": source.num_objects, "problems": source.problems,
                      "load_seconds": round(loaded, 1),
                      "pass": {"images": len(seen), "distinct": len(set(seen)),
                               "seconds": round(time.perf_counter() - started, 1),
                               "second_file_share_per_tenth": shares},
                      "expected_share": round((source.num_examples - first) / source.num_examples, 3),
                      "peak_rss_mb": round(peak_rss_mb())}))


def flat(root, images):
    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn import cli
    from keras_frcnn.config import preset
    from keras_frcnn.data import load_voc_folder, train_dataset

    voc, folder = os.path.join(root, "voc"), os.path.join(root, "flat")
    if not os.path.isdir(voc):
        write(voc, images, 0, seed=21)
    if not os.path.isdir(folder):
        os.makedirs(folder)
        for sub in ("JPEGImages", "Annotations"):
            for name in os.listdir(os.path.join(voc, sub)):
                os.link(os.path.join(voc, sub, name), os.path.join(folder, name))
    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    started = time.perf_counter()
    choice = cli.choose_data(parser.parse_args(["--voc-dir", folder]), preset("shapes"))
    source = load_voc_folder(folder, choice.train_split, decode_images=False)
    test_source = load_voc_folder(folder, choice.test_split, decode_images=False)
    loaded = time.perf_counter() - started  # (image checks: cached after the first run)
    started = time.perf_counter()
    whole = load_voc_folder(voc, "all", decode_images=False)
    voc_loaded = time.perf_counter() - started
    started = time.perf_counter()
    seen = [int(i) for batch in train_dataset(source, preset("shapes"), batch_size=BATCH, seed=0)
            for i in batch["index"]]
    print(json.dumps({"what": "flat", "machine": machine(), "files_in_folder": len(os.listdir(folder)),
                      "splits": [choice.train_split, choice.test_split], "train_images": source.num_examples,
                      "test_images": test_source.num_examples, "problems": {**source.problems, **test_source.problems},
                      "shared_files": len(source.files & test_source.files),
                      "load_seconds": round(loaded, 1), "voc_layout_all_load_seconds": round(voc_loaded, 1),
                      "voc_layout_all_images": whole.num_examples,
                      "pass": {"images": len(seen), "distinct": len(set(seen)),
                               "seconds": round(time.perf_counter() - started, 1)},
                      "peak_rss_mb": round(peak_rss_mb())}))


def _scenes(root, images):
    """``root/voc``, the VOC folder of ``images`` scenes the format benchmarks convert (written on
    first use): (its path, its ids sorted, where the held-out last tenth starts)."""
    voc = os.path.join(root, "voc")
    if not os.path.isdir(voc):
        write(voc, images, 0, seed=21)
    ids = sorted(n[:-4] for n in os.listdir(os.path.join(voc, "Annotations")))
    return voc, ids, len(ids) - len(ids) // 10


def _against_voc(voc, sources):
    """Every box of ``sources`` against the VOC folder's, both as continuous normalised
    coordinates: (boxes compared, the largest difference); classes must agree."""
    from keras_frcnn.data import load_voc_folder
    from keras_frcnn.data.voc_folder import parse_voc_xml

    voc_boxes, voc_source = {}, load_voc_folder(voc, "trainval", decode_images=False)
    for example in voc_source.dataset.as_numpy_iterator():
        name = example["image/filename"].decode()
        height, width = parse_voc_xml(os.path.join(voc, "Annotations", name[:-4] + ".xml")).size
        # VOC pixel numbers -> continuous: the pipelines' [xmin - 1, xmax]
        voc_boxes[name] = (np.maximum(example["objects"]["bbox"] - np.float32([1 / height, 1 / width, 0, 0]), 0),
                           [voc_source.class_names[label] for label in example["objects"]["label"]])
    largest, compared = 0.0, 0
    for source in sources:
        for example in source.dataset.as_numpy_iterator():
            boxes, labels = voc_boxes[os.path.basename(example["image/filename"].decode())]
            assert [source.class_names[label] for label in example["objects"]["label"]] == labels
            largest = max(largest, float(np.abs(example["objects"]["bbox"] - boxes).max(initial=0.0)))
            compared += len(labels)
    return compared, largest


def yolo(root, images):
    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.data import SHAPE_CLASSES, load_yolo
    from keras_frcnn.data.voc_folder import parse_voc_xml

    voc, ids, held_out = _scenes(root, images)
    folder = os.path.join(root, "yolo")
    if not os.path.isdir(folder):
        for split, part in (("train", ids[:held_out]), ("val", ids[held_out:])):
            for sub in ("images", "labels"):
                os.makedirs(os.path.join(folder, sub, split))
            for image_id in part:
                os.link(os.path.join(voc, "JPEGImages", f"{image_id}.jpg"),
                        os.path.join(folder, "images", split, f"{image_id}.jpg"))
                annotation = parse_voc_xml(os.path.join(voc, "Annotations", f"{image_id}.xml"))
                height, width = annotation.size
                lines = []
                for o in annotation.objects:  # pixel numbers -> continuous edges, inside the image
                    x0, y0, x1, y1 = max(o.box[0] - 1, 0), max(o.box[1] - 1, 0), o.box[2], o.box[3]
                    lines.append(f"{SHAPE_CLASSES.index(o.name)} {(x0 + x1) / 2 / width:.6f} "
                                 f"{(y0 + y1) / 2 / height:.6f} {(x1 - x0) / width:.6f} {(y1 - y0) / height:.6f}\n")
                with open(os.path.join(folder, "labels", split, f"{image_id}.txt"), "w") as f:
                    f.write("".join(lines))
        with open(os.path.join(folder, "data.yaml"), "w") as f:
            f.write("path: .\ntrain: images/train\nval: images/val\nnames:\n"
                    + "".join(f"  {i}: {name}\n" for i, name in enumerate(SHAPE_CLASSES)))
    print(json.dumps({"what": "yolo", "machine": machine(),
                      **_as_train_py_reads(voc, "--yolo-data", os.path.join(folder, "data.yaml"), load_yolo),
                      "peak_rss_mb": round(peak_rss_mb())}))


def _as_train_py_reads(voc, flag, path, load):
    """``train.py FLAG PATH``'s two splits loaded as it loads them (timed: the image checks are cached
    after a first run), every box against the VOC folder's, and one pass of the training stream."""
    from keras_frcnn import cli
    from keras_frcnn.config import preset
    from keras_frcnn.data import train_dataset

    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    started = time.perf_counter()
    choice = cli.choose_data(parser.parse_args([flag, path]), preset("shapes"))
    source = load(path, choice.train_split, decode_images=False)
    test_source = load(path, choice.test_split, decode_images=False)
    loaded = time.perf_counter() - started
    compared, largest = _against_voc(voc, (source, test_source))
    started = time.perf_counter()
    seen = [int(i) for batch in train_dataset(source, preset("shapes"), batch_size=BATCH, seed=0)
            for i in batch["index"]]
    return {"splits": [choice.train_split, choice.test_split], "classes": list(source.class_names),
            "train_images": source.num_examples, "test_images": test_source.num_examples,
            "problems": {**source.problems, **test_source.problems},
            "shared_files": len(source.files & test_source.files), "load_seconds": round(loaded, 1),
            "boxes_compared": compared, "largest_difference_from_voc": largest,
            "pass": {"images": len(seen), "distinct": len(set(seen)),
                     "seconds": round(time.perf_counter() - started, 1)}}


def _tfrecord_writer_example(voc, image_id, class_ids):
    """One VOC scene as the TF OD API's create_pascal_tf_record writes it, boxes continuous."""
    import tensorflow as tf

    from keras_frcnn.data.voc_folder import parse_voc_xml

    annotation = parse_voc_xml(os.path.join(voc, "Annotations", f"{image_id}.xml"))
    height, width = annotation.size
    with open(os.path.join(voc, "JPEGImages", f"{image_id}.jpg"), "rb") as f:
        encoded = f.read()
    boxes = [(max(o.box[1] - 1, 0) / height, max(o.box[0] - 1, 0) / width, o.box[3] / height, o.box[2] / width)
             for o in annotation.objects]

    def floats(values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    def strings(values):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))

    feature = {"image/height": ints([int(height)]), "image/width": ints([int(width)]),
               "image/filename": strings([f"{image_id}.jpg".encode()]), "image/source_id": strings([image_id.encode()]),
               "image/encoded": strings([encoded]), "image/format": strings([b"jpeg"]),
               "image/object/class/text": strings([o.name.encode() for o in annotation.objects]),
               "image/object/class/label": ints([class_ids[o.name] for o in annotation.objects]),
               "image/object/difficult": ints([int(o.difficult) for o in annotation.objects])}
    for k, key in enumerate(("ymin", "xmin", "ymax", "xmax")):
        feature[f"image/object/bbox/{key}"] = floats([b[k] for b in boxes])
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def tfrecord(root, images, shards=10, gzip=False):
    import tensorflow as tf

    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn import cli
    from keras_frcnn.config import preset
    from keras_frcnn.data import SHAPE_CLASSES, load_tfrecord, train_dataset

    suffix = "_gzip" if gzip else ""
    options = "GZIP" if gzip else None
    voc, ids, held_out = _scenes(root, images)
    folder, one = os.path.join(root, "tfrecord" + suffix), os.path.join(root, "tfrecord_one" + suffix)
    class_ids = {name: i + 1 for i, name in enumerate(SHAPE_CLASSES)}
    label_map = "".join(f'item {{\n  id: {i}\n  name: "{name}"\n}}\n' for name, i in class_ids.items())
    if not os.path.isdir(folder):
        started = time.perf_counter()
        os.makedirs(folder)
        os.makedirs(one)
        writers = [tf.io.TFRecordWriter(os.path.join(folder, f"scenes_train.record-{k:05d}-of-{shards:05d}"), options)
                   for k in range(shards)]
        with tf.io.TFRecordWriter(os.path.join(one, "scenes_train.record"), options) as single:
            for n, image_id in enumerate(ids[:held_out]):
                record = _tfrecord_writer_example(voc, image_id, class_ids)
                writers[n % shards].write(record)
                single.write(record)
        for writer in writers:
            writer.close()
        with tf.io.TFRecordWriter(os.path.join(folder, "scenes_val.record"), options) as writer:
            for image_id in ids[held_out:]:
                writer.write(_tfrecord_writer_example(voc, image_id, class_ids))
        for where in (folder, one):
            with open(os.path.join(where, "label_map.pbtxt"), "w") as f:
                f.write(label_map)
        print(f"wrote the records in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    parser = argparse.ArgumentParser()
    cli.add_data_args(parser)
    result = {"what": "tfrecord", "machine": machine(), "shards": shards, "gzip": gzip}
    for layout, where in (("sharded", folder), ("one_file", one)):
        started = time.perf_counter()
        choice = cli.choose_data(parser.parse_args(["--tfrecord", where]), preset("shapes"))
        source = load_tfrecord(where, choice.train_split, decode_images=False)
        test_source = load_tfrecord(where, choice.test_split, decode_images=False) if layout == "sharded" else None
        loaded = time.perf_counter() - started
        started = time.perf_counter()
        load_tfrecord(where, choice.train_split, decode_images=False)
        cached = time.perf_counter() - started
        entry = {"random_access": source.example_at is not None,
                 "splits": [choice.train_split, choice.test_split], "train_images": source.num_examples,
                 "test_images": test_source.num_examples if test_source else None,
                 "problems": {**source.problems, **(test_source.problems if test_source else {})},
                 "load_seconds": round(loaded, 1), "load_seconds_cached": round(cached, 1)}
        if layout == "sharded":
            compared, largest = _against_voc(voc, (source, test_source))
            entry.update(boxes_compared=compared, largest_difference_from_voc=largest)
        started = time.perf_counter()
        seen = [int(i) for batch in train_dataset(source, preset("shapes"), batch_size=BATCH, seed=0)
                for i in batch["index"]]
        ranks = np.argsort(np.argsort(seen))
        entry["pass"] = {"images": len(seen), "distinct": len(set(seen)),
                         "seconds": round(time.perf_counter() - started, 1),
                         "order_vs_files_spearman": round(float(np.corrcoef(np.arange(len(seen)), ranks)[0, 1]), 3)}
        result[layout] = entry
    result["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(result))


def csv_files(root, images):
    """The scenes of ``write`` as the two CSV layouts: the TF OD API tutorials' ``data/train_labels.csv``
    and ``data/test_labels.csv`` (headed, pixel corners, the last tenth held out) beside ``images/``, and
    keras-retinanet's one header-less file of ``images/<name>,x1,y1,x2,y2,class`` rows with
    ``classes.csv``; both read, every box against the VOC folder's, one pass of the training stream."""
    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.data import SHAPE_CLASSES, load_csv
    from keras_frcnn.data.voc_folder import parse_voc_xml

    voc, ids, held_out = _scenes(root, images)
    folder = os.path.join(root, "csv")
    if not os.path.isdir(folder):
        os.makedirs(os.path.join(folder, "images"))
        os.makedirs(os.path.join(folder, "data"))
        rows = {}
        for image_id in ids:
            os.link(os.path.join(voc, "JPEGImages", f"{image_id}.jpg"),
                    os.path.join(folder, "images", f"{image_id}.jpg"))
            annotation = parse_voc_xml(os.path.join(voc, "Annotations", f"{image_id}.xml"))
            height, width = annotation.size
            # pixel numbers -> continuous edges
            rows[image_id] = [(int(width), int(height), o.name, max(o.box[0] - 1, 0), max(o.box[1] - 1, 0), o.box[2],
                               o.box[3]) for o in annotation.objects]
        for split, part in (("train", ids[:held_out]), ("test", ids[held_out:])):
            with open(os.path.join(folder, "data", f"{split}_labels.csv"), "w") as f:
                f.write("filename,width,height,class,xmin,ymin,xmax,ymax\n")
                f.write("".join(f"{i}.jpg,{w},{h},{c},{x0:g},{y0:g},{x1:g},{y1:g}\n" for i in part
                                for w, h, c, x0, y0, x1, y1 in rows[i]))
        with open(os.path.join(folder, "annotations.csv"), "w") as f:
            f.write("".join(f"images/{i}.jpg,{x0:g},{y0:g},{x1:g},{y1:g},{c}\n" if rows[i] else f"images/{i}.jpg,,,,,\n"
                            for i in ids for _, _, c, x0, y0, x1, y1 in (rows[i] or [(0,) * 7])))
        with open(os.path.join(folder, "classes.csv"), "w") as f:
            f.write("".join(f"{name},{i}\n" for i, name in enumerate(SHAPE_CLASSES)))
    result = {"what": "csv", "machine": machine()}
    for layout, path in (("tf_od_api_tutorial", os.path.join(folder, "data")),
                         ("keras_retinanet", os.path.join(folder, "annotations.csv"))):
        result[layout] = _as_train_py_reads(voc, "--csv", path, load_csv)
    result["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(result))


def labelme(root, images):
    """The scenes of ``write`` as LabelMe saves them: a JSON file beside each image (hard links), its
    objects as rectangles (continuous corners) and every fifth as a polygon of its box's four corners
    in another order; read as ``train.py --labelme`` reads the folder (``all[:90%]`` -> ``all[90%:]``),
    every box against the VOC folder's, one pass of the training stream."""
    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.data import load_labelme
    from keras_frcnn.data.voc_folder import parse_voc_xml

    voc, ids, _ = _scenes(root, images)
    folder = os.path.join(root, "labelme")
    if not os.path.isdir(folder):
        os.makedirs(folder)
        for n, image_id in enumerate(ids):
            os.link(os.path.join(voc, "JPEGImages", f"{image_id}.jpg"), os.path.join(folder, f"{image_id}.jpg"))
            annotation = parse_voc_xml(os.path.join(voc, "Annotations", f"{image_id}.xml"))
            shapes = []
            for k, o in enumerate(annotation.objects):  # pixel numbers -> continuous edges
                x0, y0, x1, y1 = max(o.box[0] - 1, 0), max(o.box[1] - 1, 0), o.box[2], o.box[3]
                polygon = (n + k) % 5 == 0
                points = [[x1, y0], [x0, y0], [x0, y1], [x1, y1]] if polygon else [[x1, y1], [x0, y0]]
                shapes.append({"label": o.name, "points": points, "group_id": None, "flags": {},
                               "shape_type": "polygon" if polygon else "rectangle"})
            with open(os.path.join(folder, f"{image_id}.json"), "w") as f:
                json.dump({"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": f"{image_id}.jpg",
                           "imageData": None, "imageHeight": int(annotation.size[0]),
                           "imageWidth": int(annotation.size[1])}, f)
    print(json.dumps({"what": "labelme", "machine": machine(),
                      **_as_train_py_reads(voc, "--labelme", folder, load_labelme),
                      "peak_rss_mb": round(peak_rss_mb())}))


def via(root, images):
    """The scenes of ``write`` in the balloon tutorial's layout: ``train/`` and ``val/`` (the last
    tenth) each with one ``via_region_data.json`` beside its images (hard links), objects as ``rect``
    regions (continuous corners) or, every fifth, a polygon of their corners, the class a ``class``
    attribute; read as ``train.py --via`` reads it, every box against the VOC folder's, one pass."""
    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.data import load_via
    from keras_frcnn.data.voc_folder import parse_voc_xml

    voc, ids, held_out = _scenes(root, images)
    folder = os.path.join(root, "via")
    if not os.path.isdir(folder):
        for split, part in (("train", ids[:held_out]), ("val", ids[held_out:])):
            os.makedirs(os.path.join(folder, split))
            data = {}
            for n, image_id in enumerate(part):
                name = f"{image_id}.jpg"
                os.link(os.path.join(voc, "JPEGImages", name), os.path.join(folder, split, name))
                regions = []
                for k, o in enumerate(parse_voc_xml(os.path.join(voc, "Annotations", f"{image_id}.xml")).objects):
                    x0, y0, x1, y1 = max(o.box[0] - 1, 0), max(o.box[1] - 1, 0), o.box[2], o.box[3]
                    shape = ({"name": "polygon", "all_points_x": [x0, x1, x1, x0], "all_points_y": [y0, y0, y1, y1]}
                             if (n + k) % 5 == 0 else {"name": "rect", "x": x0, "y": y0, "width": x1 - x0,
                                                       "height": y1 - y0})
                    regions.append({"shape_attributes": shape, "region_attributes": {"class": o.name}})
                size = os.path.getsize(os.path.join(folder, split, name))
                data[f"{name}{size}"] = {"filename": name, "size": size, "regions": regions, "file_attributes": {}}
            with open(os.path.join(folder, split, "via_region_data.json"), "w") as f:
                json.dump(data, f)
    print(json.dumps({"what": "via", "machine": machine(), **_as_train_py_reads(voc, "--via", folder, load_via),
                      "peak_rss_mb": round(peak_rss_mb())}))


def cvat(root, images):
    """The scenes of ``write`` as a CVAT project's export, "CVAT for images 1.1": one
    ``annotations.xml`` (image ``subset`` Train, or Validation for the last tenth; objects as
    ``box`` elements with continuous corners or, every fifth, a ``polygon`` of them), the images in
    ``images/<subset>/`` (hard links); read as ``train.py --cvat`` reads it, every box against the
    VOC folder's, one pass."""
    from xml.sax.saxutils import quoteattr

    from benchmarks.common import machine, peak_rss_mb
    from keras_frcnn.data import load_cvat
    from keras_frcnn.data.voc_folder import parse_voc_xml

    voc, ids, held_out = _scenes(root, images)
    folder = os.path.join(root, "cvat")
    if not os.path.isdir(folder):
        names = sorted({o.name for image_id in ids[:50]
                        for o in parse_voc_xml(os.path.join(voc, "Annotations", f"{image_id}.xml")).objects})
        lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "<version>1.1</version>",
                 "<meta><project><labels>" + "".join(f"<label><name>{n}</name><type>any</type></label>" for n in names)
                 + "</labels></project></meta>"]
        for n, image_id in enumerate(ids):
            subset = "Train" if n < held_out else "Validation"
            os.makedirs(os.path.join(folder, "images", subset), exist_ok=True)
            name = f"{image_id}.jpg"
            os.link(os.path.join(voc, "JPEGImages", name), os.path.join(folder, "images", subset, name))
            annotation = parse_voc_xml(os.path.join(voc, "Annotations", f"{image_id}.xml"))
            shapes = []
            for k, o in enumerate(annotation.objects):
                x0, y0, x1, y1 = max(o.box[0] - 1, 0), max(o.box[1] - 1, 0), o.box[2], o.box[3]
                shapes.append(f'<polygon label={quoteattr(o.name)} source="manual" occluded="0" '
                              f'points="{x0:.2f},{y0:.2f};{x1:.2f},{y0:.2f};{x1:.2f},{y1:.2f};{x0:.2f},{y1:.2f}" '
                              'z_order="0"/>' if (n + k) % 5 == 0 else
                              f'<box label={quoteattr(o.name)} source="manual" occluded="0" xtl="{x0:.2f}" '
                              f'ytl="{y0:.2f}" xbr="{x1:.2f}" ybr="{y1:.2f}" z_order="0"/>')
            height, width = annotation.size
            lines.append(f'<image id="{n}" name="{name}" subset="{subset}" task_id="1" width="{width}" '
                         f'height="{height}">{"".join(shapes)}</image>')
        lines.append("</annotations>")
        with open(os.path.join(folder, "annotations.xml"), "w") as f:
            f.write("\n".join(lines))
    print(json.dumps({"what": "cvat", "machine": machine(), **_as_train_py_reads(voc, "--cvat", folder, load_cvat),
                      "xml_mb": round(os.path.getsize(os.path.join(folder, "annotations.xml")) / 2 ** 20, 1),
                      "peak_rss_mb": round(peak_rss_mb())}))


# The format benchmarks: what --images defaults to for each.
FORMATS = {"flat": (flat, 20000), "yolo": (yolo, 20000), "csv": (csv_files, 20000), "labelme": (labelme, 20000),
           "via": (via, 20000), "cvat": (cvat, 20000), "coco-joined": (coco_joined, 10000)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["write", "write-coco", "pipeline", "old-pipeline", "train",
                                         "tfds-stream", "coco-scale", "voc07-12", "flat", "yolo", "tfrecord",
                                         "tfrecord-scale", "csv", "labelme", "via", "coco-joined", "cvat"])
    parser.add_argument("dir")
    parser.add_argument("--images", type=int, help="training images (default 5000; write-coco: 3000)")
    parser.add_argument("--test-images", type=int, help="test images (default 500; write-coco: 300)")
    parser.add_argument("--faults", action="store_true", help="write-coco: add real exports' faults")
    parser.add_argument("--gzip", action="store_true", help="tfrecord: GZIP-compressed files")
    parser.add_argument("--passes", type=float, default=1.0)
    parser.add_argument("--old-checkout")
    parser.add_argument("--out", default="runs/at_size")
    args = parser.parse_args()
    if args.what == "write":
        write(args.dir, args.images or 5000, args.test_images or 500)
    elif args.what == "write-coco":
        write_coco(args.dir, args.images or 3000, args.test_images or 300, args.faults)
    elif args.what == "pipeline":
        pipeline(args.dir, args.passes)
    elif args.what == "old-pipeline":
        old_pipeline(args.dir, args.old_checkout, args.passes)
    elif args.what == "tfds-stream":
        tfds_stream(args.dir, args.images or 5000)
    elif args.what == "coco-scale":
        coco_scale(args.dir, args.images or 118287)
    elif args.what == "voc07-12":
        voc07_12(args.dir)
    elif args.what == "tfrecord":
        tfrecord(args.dir, args.images or 20000, gzip=args.gzip)
    elif args.what == "tfrecord-scale":
        tfrecord_scale(args.dir, args.images or 118287)
    elif args.what in FORMATS:  # the scenes in another format, read as train.py reads it
        measure, images = FORMATS[args.what]
        measure(args.dir, args.images or images)
    else:
        train(args.dir, args.out)


if __name__ == "__main__":
    main()
