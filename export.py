"""Export a trained model as a SavedModel for TensorFlow Serving (GPU or CPU), or for ONNX Runtime,
OpenVINO or LiteRT.

    python export.py --model runs/shapes/model.keras --out exported/shapes            # next version
    python export.py --model runs/shapes/model.keras --out exported/shapes --version 3
    python export.py --model runs/shapes/model.keras --format onnx --out exported/shapes.onnx

writes ``exported/shapes/<version>/`` in TF Serving's layout, with a warm-up file in
``assets.extra/``. Signatures: ``serving_default`` (``input_tensor`` uint8 [B, H, W, 3]),
``serving_encoded`` (``encoded_image_string_tensor`` string [B] of JPEG/PNG/BMP/GIF bytes) and
``tf_example`` (``tf_example`` string [B] of serialized ``tf.train.Example``), all with the TF
Object Detection API's outputs. ``--format onnx|openvino|litert`` writes one file
(``.onnx``; ``.xml`` + ``.bin``; ``.tflite`` + ``.labels.txt``) with the same four detection outputs
(boxes, scores, classes, count), NMS inside, float32 weights (the runtime picks its own compute
precision). See ``keras_frcnn/export.py``, ``keras_frcnn/formats.py`` and ``serving/README.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

try:  # (TensorFlow loads here: seconds in which a Ctrl-C would print a traceback)
    from keras_frcnn import cli
    from keras_frcnn.formats import FORMATS, SUFFIXES
except KeyboardInterrupt:
    if __name__ != "__main__":
        raise
    print("interrupted", file=sys.stderr)
    sys.exit(130)


def parse_args(argv=None):
    parser = cli.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a .keras file written by train.py")
    parser.add_argument("--out", required=True,
                        help="saved_model: the model's base path DIR/NAME (TF Serving's "
                        "--model_base_path); other formats: the file to write (its suffix is added "
                        "if missing)")
    parser.add_argument("--format", default="saved_model", choices=FORMATS,
                        help="saved_model (TF Serving, the default), onnx (ONNX Runtime), openvino "
                        "(OpenVINO IR) or litert (.tflite)")
    parser.add_argument("--version", type=int,
                        help="version number (default: one more than the highest in --out)")
    parser.add_argument("--jit", action="store_true",
                        help="compile the network (everything after decoding) with XLA, for one image: a "
                        "request's images go through it one after another")
    parser.add_argument("--precision", choices=["float32", "bfloat16", "float16", "mixed_bfloat16",
                                                "mixed_float16"],
                        help="dtype of the exported convolutions and fc layers, weights included "
                        "(default: the model's own); bfloat16 for CPU servers with AVX-512 BF16 or "
                        "AMX, float16 for GPUs (mixed_* are the same)")
    parser.add_argument("--no-warmup", action="store_true", help="leave out assets.extra/ warm-up")
    args = parser.parse_args(argv)
    # Checked before the model is loaded: a folder where a file goes, or the other way round.
    if args.format == "saved_model" and os.path.exists(args.out) and not os.path.isdir(args.out):
        parser.error(f"--out {args.out}: a file; --format saved_model writes a folder of versions")
    if args.format != "saved_model" and (os.path.isdir(args.out) or args.out.endswith(("/", os.sep))):
        parser.error(f"--out {args.out}: a folder; --format {args.format} writes one file "
                     f"(e.g. --out {os.path.join(args.out, 'model' + SUFFIXES[args.format])})")
    other = next((fmt for fmt, suffix in SUFFIXES.items() if fmt != args.format and args.out.endswith(suffix)), None)
    if other:  # (x.onnx.tflite written for a typo, or the format flag forgotten)
        parser.error(f"--out {args.out}: the suffix of --format {other}; --format {args.format} writes "
                     + (f"{os.path.splitext(args.out)[0] + SUFFIXES[args.format]}" if args.format in SUFFIXES
                        else "a folder of versions"))
    if args.format != "saved_model":
        given = [flag for flag, on in (("--version", args.version is not None), ("--jit", args.jit),
                                       ("--no-warmup", args.no_warmup)) if on]
        if given:
            parser.error(f"{' and '.join(given)}: for --format saved_model only (not {args.format})")
    if args.version is not None and not 1 <= args.version < 2 ** 63:  # (TF Serving reads the folder's name as int64)
        parser.error(f"--version {args.version}: a version is a positive integer below 2**63 (TF Serving's folder "
                     "name, read as an int64)")
    return args


def main(argv=None):
    args = parse_args(argv)
    cli.quiet_tensorflow()
    return cli.run(lambda: export(args))


def export(args):
    from keras_frcnn.config import MIXED_PRECISIONS
    from keras_frcnn.export import export_saved_model

    started = time.perf_counter()
    model = cli.load_model(args.model)
    if args.format != "saved_model":
        return export_runtime(args, model, started)
    precision = args.precision and MIXED_PRECISIONS.get(args.precision, args.precision)
    if precision and precision != model.frcnn_config.precision:
        model = model.with_precision(precision)
    # A mixed model's weights go out in its 16-bit compute dtype: no cast per request, half the size;
    # batch norms go out folded into their convolutions (no pass over their outputs).
    model = model.for_inference()
    try:
        path = export_saved_model(model, args.out, version=args.version, jit_compile=args.jit,
                                  warmup=not args.no_warmup)
    except (FileExistsError, ValueError) as error:
        raise cli.UsageError(str(error)) from None
    print(f"exported {args.model} -> {path} ({_count(model.class_names)}: "
          f"{cli.class_list(model.class_names)}; {model.frcnn_config.precision}) in "
          f"{time.perf_counter() - started:.0f} s")
    print(f"serve it: see serving/README.md (model_base_path {os.path.abspath(args.out)})")
    return 0


def _count(class_names) -> str:
    return f"{len(class_names)} class{'es' if len(class_names) != 1 else ''}"


def export_runtime(args, model, started):
    from keras_frcnn import formats

    if args.precision not in (None, "float32"):
        raise cli.UsageError(f"--format {args.format} exports float32 weights (ONNX Runtime, "
                             "OpenVINO and LiteRT choose their own compute precision): leave out "
                             "--precision")
    # A mixed model's float32 master weights, not its 16-bit inference form.
    trained_in = model.frcnn_config.precision
    model = model.with_precision("float32") if trained_in != "float32" else model
    out = args.out if args.out.endswith(formats.SUFFIXES[args.format]) else args.out + formats.SUFFIXES[args.format]
    try:
        written = formats.export_runtime_model(model, out, args.format)
    except (FileExistsError, ValueError, ImportError) as error:
        raise cli.UsageError(str(error)) from None
    print(f"exported {args.model} -> {', '.join(written)} ({args.format}; "
          f"{_count(model.class_names)}: {cli.class_list(model.class_names)}) in "
          f"{time.perf_counter() - started:.0f} s")
    if trained_in != "float32":
        print(f"the {args.format} file computes in float32 (the {trained_in} model's float32 weights): its "
              f"detections are those of the float32 SavedModel (--precision float32), near but not always "
              f"equal to the {trained_in} model's (a score's second decimal, a box near --min-score)")
    print(f"check it: python -m keras_frcnn.predict --model {written[0]} IMAGE --out DIR")
    return 0


if __name__ == "__main__":
    sys.exit(main())
