"""Detect objects in image files and write PNGs with the boxes, class names and scores drawn.

    python -m keras_frcnn.predict --model runs/shapes/model.keras IMAGE [IMAGE ...] --out DIR

``--model`` also takes an exported artifact, run in its own runtime: a SavedModel version folder
(``exported/shapes/1``), ``.onnx`` (ONNX Runtime), ``.xml`` (OpenVINO) or ``.tflite`` (LiteRT).

An unreadable image is reported on stderr (naming the file) and skipped; the others are still
done; the exit status is 1 if any image failed.
"""

from __future__ import annotations

import argparse
import os
import sys

from keras_frcnn import cli


def read_image(path):
    """uint8 ``[H, W, 3]`` of an image file (JPEG, PNG, BMP, GIF: first frame), or ValueError
    naming the file."""
    import tensorflow as tf

    try:
        data = tf.io.read_file(path)
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
    except (tf.errors.OpError, OSError) as error:
        raise ValueError(f"{path}: not a readable image ({error.message if hasattr(error, 'message') else error})") from None
    if image.dtype != tf.uint8:
        image = tf.image.convert_image_dtype(image, tf.uint8)
    return image.numpy()


def predict_files(model, paths, out_dir, min_score=0.3, log=print, warn=None):
    """Write ``out_dir/<name>.png`` for every readable image of ``paths``; returns (written, failed)."""
    import numpy as np

    from keras_frcnn.visualize import draw_detections

    warn = warn or (lambda message: print(message, file=sys.stderr))
    os.makedirs(out_dir, exist_ok=True)
    written, failed = [], []
    for path in paths:
        try:
            image = read_image(path)
        except ValueError as error:
            warn(f"error: {error}")
            failed.append(path)
            continue
        out = {k: np.asarray(v)[0] for k, v in model(image[None]).items()}
        n = int(out["num_detections"])
        drawn = draw_detections(image, out["boxes"][:n], out["confidence"][:n], out["labels"][:n],
                                model.class_names, min_score=min_score)
        target = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        from PIL import Image

        Image.fromarray(np.asarray(drawn)).save(target)
        kept = [(model.class_names[int(l)], float(s)) for l, s in
                zip(out["labels"][:n], out["confidence"][:n]) if s >= min_score]
        log(f"{path}: {len(kept)} detections >= {min_score:g} "
            + ", ".join(f"{name} {score:.2f}" for name, score in kept[:10]) + f" -> {target}")
        written.append(target)
    return written, failed


def main(argv=None):
    parser = cli.ArgumentParser(prog="python -m keras_frcnn.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="a .keras file written by train.py, or an exported model (SavedModel "
                        "folder, .onnx, .xml, .tflite)")
    parser.add_argument("images", nargs="+", help="image files")
    parser.add_argument("--out", required=True, help="folder for the PNGs")
    parser.add_argument("--min-score", type=float, default=0.3, help="draw detections above this")
    args = parser.parse_args(argv)
    cli.quiet_tensorflow()
    return cli.run(lambda: _predict(args))


def _predict(args):
    if args.model.endswith(".keras"):
        model = cli.load_model(args.model).for_inference()
    else:
        from keras_frcnn.formats import load_runtime_model

        try:
            model = load_runtime_model(args.model)
        except Exception as error:  # each runtime has exceptions of its own for a bad file
            raise cli.UsageError(f"--model {args.model}: cannot be opened "
                                 f"({type(error).__name__}: {error})") from None
    _, failed = predict_files(model, args.images, args.out, args.min_score)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
