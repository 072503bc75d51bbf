"""Exports for other runtimes: ONNX (ONNX Runtime), OpenVINO IR and LiteRT, each the whole detector.

    python export.py --model runs/shapes/model.keras --format onnx --out exported/shapes.onnx

Every format is converted by its runtime's own converter (tf2onnx, ``openvino.convert_model``,
the LiteRT converter) from one TensorFlow function, ``detection_function``: uint8 images
``[B, H, W, 3]`` in, the TF Object Detection API's four outputs out (``detection_boxes``
normalised yxyx, ``detection_scores``, ``detection_classes`` 1-based float32, ``num_detections``),
with resizing, box decoding and both NMS stages inside. It is the SavedModel's ``serving_default``
but for what these runtimes lack:

- no string output: the class names travel as the format's metadata (ONNX ``metadata_props``,
  OpenVINO ``rt_info``) or, for LiteRT, a labels file beside the model (``<name>.labels.txt``, one
  name per line, TFLite's usual label file);
- traced inside ``preprocessing.for_converters``: no ``tf.cond`` shortcuts, no float64, no
  sorted top-k, RoIAlign's samples by gathers (no CropAndResize); the same values (RoIAlign's
  up to float rounding);
- the uint8 image is widened to float32 before the row gathers of the resize (no bitcast, an op
  the converters do not map); the same values;
- a batch must hold at least one image (the SavedModel answers an empty batch).

``load_runtime_model(path)`` opens an artifact in its runtime and returns a callable with the
Keras model's interface (for ``keras_frcnn.predict`` and the tests).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys

import numpy as np

from keras_frcnn.files import staging_folder

FORMATS = ("saved_model", "onnx", "openvino", "litert")
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml", "litert": ".tflite"}
INPUT_NAME = "input_tensor"
OUTPUT_NAMES = ("detection_boxes", "detection_scores", "detection_classes", "num_detections")
CLASS_NAMES_KEY = "class_names"


@contextlib.contextmanager
def _runtime_needed(fmt):
    """An ImportError of a runtime's package says which extra installs it."""
    try:
        yield
    except ImportError as error:
        extra = {"onnx": "onnx", "openvino": "openvino", "litert": "litert"}.get(fmt)
        if extra is None:
            raise
        raise ImportError(f"the {fmt} format needs {error.name or 'its runtime'}: "
                          f"pip install 'keras-frcnn[{extra}]'") from error


def format_of(path) -> str:
    """The format of an artifact path, from its suffix (a folder is a SavedModel)."""
    path = os.fspath(path)
    for name, suffix in SUFFIXES.items():
        if path.endswith(suffix):
            return name
    if os.path.isdir(path) or path.endswith(os.sep):
        return "saved_model"
    raise ValueError(f"{path}: not an exported model (.onnx, .xml, .tflite or a SavedModel folder)")


def detection_function(model, distinct_ranks=False):
    """``model`` (a ``FasterRCNN``) as a ``tf.function`` of uint8 ``input_tensor [B, H, W, 3]``
    -> the four detection outputs, traced without branches (see the module docstring);
    ``distinct_ranks`` for LiteRT (``preprocessing.for_converters``)."""
    import tensorflow as tf

    from keras_frcnn.export import od_api_outputs
    from keras_frcnn.models import forward
    from keras_frcnn.preprocessing import for_converters

    layers, class_names = model.layers_, tuple(model.class_names)

    def detect(input_tensor):
        shape = tf.shape(input_tensor)
        sizes = tf.tile(shape[1:3][None], [shape[0], 1])
        detections = forward(layers, tf.cast(input_tensor, tf.float32), sizes)
        outputs = od_api_outputs(detections, sizes, class_names)
        return {name: outputs[name] for name in OUTPUT_NAMES}

    function = tf.function(detect, autograph=False, input_signature=[
        tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)])
    with for_converters(distinct_ranks):
        function.get_concrete_function()
    return function


def _write_function(model, directory, frozen=False):
    """The detection function as a one-signature SavedModel, the converters' input; ``frozen``
    (LiteRT's): its weights as constants (LiteRT's converter keeps variables otherwise, which its
    runtime then reads uninitialised), and NMS given distinct ranks."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = detection_function(model, distinct_ranks=frozen)
    concrete = function.get_concrete_function()
    module = tf.Module()
    if frozen:
        constants = convert_variables_to_constants_v2(concrete)
        keys = sorted(concrete.structured_outputs)  # a dict's outputs are flattened in key order

        def named(input_tensor):
            return dict(zip(keys, constants(input_tensor)))

        function = tf.function(named, autograph=False, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name=INPUT_NAME)])
        concrete = function.get_concrete_function()
    else:
        module.weights = list(model.weights)
    module.detect = function
    tf.saved_model.save(module, directory, signatures={"serving_default": concrete})


def export_runtime_model(model, path, fmt=None):
    """Write ``model`` to ``path`` in ``fmt`` ("onnx", "openvino", "litert"; default: from the
    suffix). Returns the paths written."""
    path = os.path.abspath(os.fspath(path))
    fmt = fmt or format_of(path)
    if fmt not in SUFFIXES:
        raise ValueError(f"format must be one of {tuple(SUFFIXES)}, got {fmt!r}")
    if not path.endswith(SUFFIXES[fmt]):
        raise ValueError(f"a {fmt} model's file name ends in {SUFFIXES[fmt]}: {path}")
    if os.path.exists(path):
        raise FileExistsError(f"{path} exists: remove it or choose another --out")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    names = list(model.class_names)
    with _runtime_needed(fmt):  # before the trace: a missing converter fails at once
        __import__({"onnx": "tf2onnx", "openvino": "openvino", "litert": "ai_edge_litert"}[fmt])
    # Written beside ``path`` under a temporary folder and renamed into place, the model file last:
    # a failed export (a full disk, a kill) leaves no torn model for a runtime to load, nor a file
    # that would refuse the next try.
    with staging_folder(os.path.dirname(path), os.path.basename(path)) as staging:
        staged = os.path.join(staging, os.path.basename(path))
        if fmt == "openvino":
            written = _to_openvino(model, staged, names)
        else:
            saved = os.path.join(staging, "saved_model")
            _write_function(model, saved, frozen=fmt == "litert")
            written = {"onnx": _to_onnx, "litert": _to_litert}[fmt](saved, staged, names, staging)
        for file in sorted(written, key=lambda file: file == staged):
            os.replace(file, os.path.join(os.path.dirname(path), os.path.basename(file)))
    return [os.path.join(os.path.dirname(path), os.path.basename(file)) for file in written]


# A module run as a child process that dies with this one (Linux's PR_SET_PDEATHSIG; elsewhere a
# child outlives a kill -9 of its parent as before): an export killed by kill -9 or the OOM killer
# left tf2onnx converting, ~700 MB, for minutes, and writing into the staging folder after the
# next export had cleared it.
_TIED_CHILD = """
import ctypes, os, runpy, signal, sys
parent, module = int(sys.argv.pop(1)), sys.argv.pop(1)
try:
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
except (AttributeError, OSError):
    pass
if os.getppid() != parent:  # (the parent died before that)
    sys.exit(1)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def run_tied(module, args) -> subprocess.CompletedProcess:
    """``python -m module *args`` (output captured) in a child process that dies with this one."""
    return subprocess.run([sys.executable, "-c", _TIED_CHILD, str(os.getpid()), module, *args],
                          capture_output=True, text=True)


def _to_onnx(saved, path, names, work):
    import onnx

    staging = os.path.join(work, "tf2onnx_output.onnx")
    # tf2onnx's command line: its Python API wants a Keras model or a graph def, and converts
    # a SavedModel's signature only from here.
    result = run_tied("tf2onnx.convert", ["--saved-model", saved, "--output", staging, "--opset", "17"])
    if result.returncode != 0 or not os.path.exists(staging):
        raise RuntimeError(f"tf2onnx could not convert the model:\n{result.stderr[-4000:]}")
    proto = onnx.load(staging)
    entry = proto.metadata_props.add()
    entry.key, entry.value = CLASS_NAMES_KEY, json.dumps(names)
    onnx.save(proto, path)
    return [path]


def _to_openvino(model, path, names):
    import openvino as ov

    # From the traced function in memory: OpenVINO's SavedModel reader failed to find variables
    # of a ResNet's SavedModel ("Cannot find requested variable", ~170 variables and more).
    converted = ov.convert_model(detection_function(model).get_concrete_function())
    converted.set_rt_info(json.dumps(names), ["model_info", CLASS_NAMES_KEY])
    ov.save_model(converted, path, compress_to_fp16=False)
    return [path, path[: -len(".xml")] + ".bin"]


def _to_litert(saved, path, names, work):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(saved)
    flatbuffer = converter.convert()
    with open(path, "wb") as f:
        f.write(flatbuffer)
    labels = labels_path(path)
    with open(labels, "w") as f:
        f.write("".join(f"{name}\n" for name in names))
    return [path, labels]


def labels_path(tflite_path):
    """The labels file beside a LiteRT model."""
    return os.fspath(tflite_path)[: -len(".tflite")] + ".labels.txt"


class RuntimeModel:
    """An exported artifact opened in its own runtime: ``model(images)`` -> the Keras model's
    detection dict (``boxes`` input pixels, ``confidence``, ``labels`` 0-based, -1 padding,
    ``num_detections``) as numpy, plus ``class_names`` and ``raw(images)`` (the OD API outputs).
    """

    def __init__(self, path, fmt=None, threads=None):
        self.path = os.fspath(path)
        self.format = fmt or format_of(self.path)
        opener = {"onnx": self._open_onnx, "openvino": self._open_openvino,
                  "litert": self._open_litert, "saved_model": self._open_saved_model}[self.format]
        self.labels_file = None  # where the class names were read, where a file of their own holds them
        with _runtime_needed(self.format):
            self._run, names = opener(threads)
        self.class_names = names if isinstance(names, _NamesSeen) else tuple(names)

    def _open_onnx(self, threads):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        session = ort.InferenceSession(self.path, options, providers=["CPUExecutionProvider"])
        names = json.loads(session.get_modelmeta().custom_metadata_map[CLASS_NAMES_KEY])
        outputs = [o.name for o in session.get_outputs()]

        def run(images):
            return dict(zip(outputs, session.run(None, {INPUT_NAME: images})))
        return run, names

    def _open_openvino(self, threads):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(self.path)
        names = json.loads(model.get_rt_info(["model_info", CLASS_NAMES_KEY]).astype(str))
        # f32: OpenVINO's CPU plugin otherwise computes in bfloat16 where the CPU has it.
        config = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        compiled = core.compile_model(model, "CPU", config)

        def run(images):
            result = compiled(images)
            return {o.get_any_name(): result[o] for o in compiled.outputs}
        return run, names

    def _open_litert(self, threads):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=self.path, num_threads=threads)
        runner = interpreter.get_signature_runner("serving_default")
        self.labels_file = labels_path(self.path)
        with open(self.labels_file, encoding="utf-8") as f:
            names = [line.rstrip("\n") for line in f if line.strip()]

        def run(images):
            return runner(**{INPUT_NAME: images})
        return run, names

    def _open_saved_model(self, threads):
        import tensorflow as tf

        path = self.path
        versions = [n for n in os.listdir(path) if n.isdigit()] if os.path.isdir(path) else []
        if not os.path.exists(os.path.join(path, "saved_model.pb")) and versions:
            path = os.path.join(path, max(versions, key=int))  # a TF Serving base path: the newest
        signature = tf.saved_model.load(path).signatures["serving_default"]
        labels = os.path.join(path, "assets.extra", "labels.txt")  # (export.LABELS_FILE)
        names = {}  # class id -> name, as the outputs show them (a SavedModel exported without the labels file)

        def run(images):
            out = {k: v.numpy() for k, v in signature(**{INPUT_NAME: tf.constant(images)}).items()}
            for cls, name in zip(out["detection_classes"].ravel(), out["detection_class_names"].ravel()):
                if cls >= 1:
                    names[int(cls) - 1] = name.decode()
            return out
        if os.path.isfile(labels):
            self.labels_file = labels
            with open(labels, encoding="utf-8") as f:
                return run, tuple(line.rstrip("\n") for line in f)
        return run, _NamesSeen(names)

    def raw(self, images):
        """The four OD API outputs for uint8 ``images [B, H, W, 3]``."""
        images = np.ascontiguousarray(images, dtype=np.uint8)
        out = self._run(images)
        return {name: np.asarray(out[name]) for name in OUTPUT_NAMES}

    def __call__(self, images):
        images = np.asarray(images, dtype=np.uint8)
        out = self.raw(images)
        h, w = images.shape[1:3]
        count = out["num_detections"].astype(np.int32)
        labels = out["detection_classes"].astype(np.int32) - 1
        valid = np.arange(labels.shape[1])[None, :] < count[:, None]
        highest = int(labels[valid].max(initial=-1))
        if self.labels_file and highest >= len(self.class_names):  # (a file edited, or of another export)
            from keras_frcnn.data.problems import DataError

            raise DataError(f"{self.labels_file}: {len(self.class_names)} class names, but the model detects class "
                            f"{highest + 1}: not this model's labels file (export the model again)")
        return {"boxes": out["detection_boxes"] * np.array([h, w, h, w], np.float32),
                "confidence": out["detection_scores"], "labels": np.where(valid, labels, -1),
                "num_detections": count}


class _NamesSeen(tuple):
    """A SavedModel's class names as far as its outputs have shown them (its string output
    names each detection's class; the list itself is not a signature output)."""

    def __new__(cls, names):
        self = super().__new__(cls)
        self._names = names
        return self

    def __getitem__(self, index):
        return self._names.get(index, f"class_{index + 1}")


def load_runtime_model(path, threads=None):
    """``RuntimeModel`` of an exported artifact (format from the path)."""
    return RuntimeModel(path, threads=threads)
