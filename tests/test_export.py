"""The exported SavedModel: TF Serving's layout and signatures, equal detections, bad requests,
threads, warm-up, XLA, saved_model_cli and the serving client, checked on a tiny trained model.

The SavedModel is read in fresh processes where neither ``keras_frcnn`` nor ``keras`` can be
imported, as in TF Serving. TF Serving itself cannot run here (no Docker engine, no binary): the
client is tested against ``serving_double.ServingDouble``, the same SavedModel behind TF Serving's
gRPC and REST APIs on localhost.
"""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from conftest import synthetic_batch, tiny_config
from keras_frcnn import export

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("detection_boxes", "detection_scores", "detection_classes", "num_detections", "detection_class_names",
        "detection_multiclass_scores", "raw_detection_boxes", "raw_detection_scores")
CLASS_NAMES = ["square", "wide"]

# Runs in a fresh process: TF only, the package and Keras made unimportable.
CONTRACT_CHILD = textwrap.dedent(r"""
    import sys
    sys.modules["keras_frcnn"] = None  # `import keras_frcnn` raises ImportError
    sys.modules["keras"] = None
    import io, json, threading
    import numpy as np, tensorflow as tf
    from PIL import Image
    from tensorflow_serving.apis import prediction_log_pb2

    path, images_npz, out_npz, out_json, jit_path, large_path = sys.argv[1:7]

    def memory_mb(field):  # VmRSS: now; VmHWM: the peak so far
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field)) / 1024
    images = [v for _, v in sorted(np.load(images_npz).items(), key=lambda kv: int(kv[0][1:]))]
    model = tf.saved_model.load(path)
    default, encoded = model.signatures["serving_default"], model.signatures["serving_encoded"]
    examples = model.signatures["tf_example"]

    def example(data, key="image/encoded"):
        feature = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
        return tf.train.Example(features=tf.train.Features(feature={key: feature})).SerializeToString()
    report, arrays = {}, {}

    def run(fn, **inputs):
        return {k: v.numpy() for k, v in fn(**{k: tf.convert_to_tensor(v) for k, v in inputs.items()}).items()}

    def png(image, **kw):
        f = io.BytesIO(); Image.fromarray(image).save(f, format="PNG", **kw); return f.getvalue()

    def gif_stating(pictures):  # a GIF of a 1 x 1 screen whose pictures state these sizes (test_data_fixtures')
        data = b"GIF89a" + (1).to_bytes(2, "little") * 2 + b"\x80\0\0" + b"\0\0\0\xff\xff\xff"
        for width, height in pictures:
            data += (b"\x2c" + bytes(4) + width.to_bytes(2, "little") + height.to_bytes(2, "little")
                     + b"\0" + b"\x02\x02\x44\x01\x00")
        return data + b"\x3b"

    report["signatures"] = {
        name: {"inputs": {k: [s.dtype.name, s.shape.as_list()] for k, s in fn.structured_input_signature[1].items()},
               "outputs": {k: [s.dtype.name, s.shape.as_list()] for k, s in fn.structured_outputs.items()}}
        for name, fn in model.signatures.items()}
    for i, image in enumerate(images):
        for k, v in run(default, input_tensor=image[None]).items():
            arrays[f"default_{i}_{k}"] = v
    for k, v in run(encoded, encoded_image_string_tensor=np.array([png(im) for im in images], object)).items():
        arrays[f"encoded_{k}"] = v
    for k, v in run(examples, tf_example=np.array([example(png(im)) for im in images], object)).items():
        arrays[f"example_{k}"] = v

    def valid(out):
        n = out["num_detections"].astype(int)
        boxes = out["detection_boxes"]
        return bool(((boxes >= 0) & (boxes <= 1)).all() and (out["detection_scores"][:, 1:] <= out["detection_scores"][:, :-1]).all()
                    and all((out["detection_classes"][b, :n[b]] >= 1).all() and (out["detection_classes"][b, n[b]:] == 0).all() for b in range(len(n))))

    rgb = images[0]
    jpeg = tf.io.encode_jpeg(rgb).numpy()
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    gif = io.BytesIO(); frames[0].save(gif, format="GIF", save_all=True, append_images=frames[1:]); gif = gif.getvalue()
    bmp = io.BytesIO(); Image.fromarray(rgb).save(bmp, format="BMP"); bmp = bmp.getvalue()
    palette_bmp = io.BytesIO(); Image.fromarray(rgb).convert("P").save(palette_bmp, format="BMP")
    palette_bmp = palette_bmp.getvalue()  # DecodeBmp would read its indices as grey levels
    negative_bmp = bmp[:18] + (-rgb.shape[1]).to_bytes(4, "little", signed=True) + bmp[22:]  # (a width < 0)
    rgba_webp = io.BytesIO()  # TensorFlow's WebP decoder gives it as RGBA only
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(rgba_webp, format="WEBP", lossless=True)
    animated_webp = io.BytesIO()
    frames[0].save(animated_webp, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    with open(large_path, "rb") as f:
        large = f.read()
    bomb = bytearray(png(rgb))  # a decompression bomb: a small PNG whose header states 50,000 x 50,000
    bomb[16:24] = (50000).to_bytes(4, "big") * 2
    webp_bomb = bytearray(rgba_webp.getvalue())  # a lossless WebP's header stating 16,383 x 16,383 (268 MP)
    assert webp_bomb[12:16] == b"VP8L"
    sides = int.from_bytes(webp_bomb[21:25], "little")
    webp_bomb[21:25] = ((sides & ~(2 ** 28 - 1)) | 16382 | 16382 << 14).to_bytes(4, "little")
    requests = {
        "png bomb": (encoded, {"encoded_image_string_tensor": np.array([png(rgb), bytes(bomb)], object)}),
        "webp bomb": (encoded, {"encoded_image_string_tensor": np.array([bytes(webp_bomb)], object)}),
        # (GIFs whose screen states 1 x 1: TensorFlow's decoder holds every picture, of any size)
        "gif picture bomb": (encoded, {"encoded_image_string_tensor": np.array([gif_stating([(30000, 30000)])],
                                                                               object)}),
        "gif of many pictures": (encoded, {"encoded_image_string_tensor": np.array(
            [png(rgb), gif_stating([(8000, 8000)] * 9)], object)}),
        "empty string": (encoded, {"encoded_image_string_tensor": np.array([b""], object)}),
        "random bytes": (encoded, {"encoded_image_string_tensor": np.array([np.random.default_rng(0).bytes(5000)], object)}),
        "truncated jpeg": (encoded, {"encoded_image_string_tensor": np.array([jpeg[: len(jpeg) // 2]], object)}),
        "one bad image in a batch": (encoded, {"encoded_image_string_tensor": np.array([png(rgb), b"junk"], object)}),
        # (a signature alone once failed in decode_image's WebP test: "pos 8 out of range", the bytes echoed)
        "a signature alone": (encoded, {"encoded_image_string_tensor": np.array([png(rgb), b"\x89PNG"], object)}),
        "scalar string": (encoded, {"encoded_image_string_tensor": np.array(png(rgb), object)}),
        "1x1 image": (encoded, {"encoded_image_string_tensor": np.array([png(rgb[:1, :1])], object)}),
        "8000x8000 jpeg": (encoded, {"encoded_image_string_tensor": np.array([large], object)}),
        # (after it: VmHWM is the process's peak) Several large images (or requests TF Serving's batching joins): each resized as decoded.
        "three 8000x8000 jpegs": (encoded, {"encoded_image_string_tensor": np.array([large] * 3, object)}),
        "grayscale png": (encoded, {"encoded_image_string_tensor": np.array([png(rgb[:, :, 0])], object)}),
        "rgba png": (encoded, {"encoded_image_string_tensor": np.array([png(np.dstack([rgb, rgb[:, :, :1]]))], object)}),
        "16-bit png": (encoded, {"encoded_image_string_tensor": np.array([tf.io.encode_png(rgb.astype(np.uint16) * 257).numpy()], object)}),
        "animated gif": (encoded, {"encoded_image_string_tensor": np.array([gif], object)}),
        "bmp": (encoded, {"encoded_image_string_tensor": np.array([bmp], object)}),
        "rgba webp": (encoded, {"encoded_image_string_tensor": np.array([rgba_webp.getvalue()], object)}),
        "animated webp": (encoded, {"encoded_image_string_tensor": np.array([png(rgb), animated_webp.getvalue()], object)}),
        "palette bmp": (encoded, {"encoded_image_string_tensor": np.array([palette_bmp], object)}),
        "palette bmp in an example": (examples, {"tf_example": np.array([example(palette_bmp)], object)}),
        "negative-width bmp": (encoded, {"encoded_image_string_tensor": np.array([png(rgb), negative_bmp], object)}),
        "empty batch (encoded)": (encoded, {"encoded_image_string_tensor": np.array([], object)}),
        "example without image/encoded": (examples, {"tf_example": np.array([example(png(rgb), "image/data")], object)}),
        "not an example": (examples, {"tf_example": np.array([b"not a proto"], object)}),
        "example of junk bytes": (examples, {"tf_example": np.array([example(b"junk")], object)}),
        "empty batch (tf_example)": (examples, {"tf_example": np.array([], object)}),
        "float input_tensor": (default, {"input_tensor": rgb[None].astype(np.float32)}),
        "int32 input_tensor": (default, {"input_tensor": rgb[None].astype(np.int32)}),
        "rank-3 input_tensor": (default, {"input_tensor": rgb}),
        "4-channel input_tensor": (default, {"input_tensor": np.dstack([rgb, rgb[:, :, :1]])[None]}),
        "zero-height input_tensor": (default, {"input_tensor": np.zeros((1, 0, 5, 3), np.uint8)}),
        "empty batch (input_tensor)": (default, {"input_tensor": np.zeros((0, 64, 64, 3), np.uint8)}),
    }
    reference = run(default, input_tensor=rgb[None])
    report["bad_requests"] = {}
    for name, (fn, inputs) in requests.items():
        entry = {}
        before = memory_mb("VmRSS")
        try:
            out = run(fn, **inputs)
            entry["peak_growth_mb"] = memory_mb("VmHWM") - before
            entry["shapes"] = {k: list(v.shape) for k, v in out.items()}
            entry["valid"] = valid(out) if len(out["num_detections"]) else True
            if name in ("grayscale png", "rgba png", "16-bit png", "animated gif", "bmp", "rgba webp", "8000x8000 jpeg",
                        "three 8000x8000 jpegs"):
                arrays[f"bad_{name}_boxes"] = out["detection_boxes"]
        except tf.errors.OpError as error:
            entry["error"] = [type(error).__name__, error.message]
        except (TypeError, ValueError) as error:
            entry["error"] = [type(error).__name__, str(error)]
        after = run(default, input_tensor=rgb[None])  # the next request still works
        entry["next_ok"] = all(np.array_equal(after[k], reference[k]) for k in reference)
        report["bad_requests"][name] = entry

    # Eight callers at once: no errors, and the detections of a single caller.
    alone = [run(encoded, encoded_image_string_tensor=np.array([png(im)], object)) for im in images]
    problems = []
    def caller(t):
        for r in range(3):
            i = (t + r) % len(images)
            try:
                out = run(encoded, encoded_image_string_tensor=np.array([png(images[i])], object))
                if not all(np.array_equal(out[k], alone[i][k]) for k in out):
                    problems.append(f"thread {t}: image {i} differs")
            except Exception as error:
                problems.append(f"thread {t}: {error!r}")
    threads = [threading.Thread(target=caller, args=(t,)) for t in range(8)]
    [t.start() for t in threads]; [t.join() for t in threads]
    report["threads"] = problems

    # The warm-up file replays against the model.
    report["warmup"] = []
    for record in tf.data.TFRecordDataset(f"{path}/assets.extra/tf_serving_warmup_requests"):
        request = prediction_log_pb2.PredictionLog.FromString(record.numpy()).predict_log.request
        out = run(model.signatures[request.model_spec.signature_name],
                  **{k: tf.make_ndarray(v) for k, v in request.inputs.items()})
        report["warmup"].append([request.model_spec.signature_name, request.model_spec.name,
                                 sorted(request.inputs), valid(out)])

    if jit_path != "-":  # the same model exported with XLA compilation of the network
        jit = tf.saved_model.load(jit_path).signatures
        for i, image in enumerate(images[:2]):
            for k, v in run(jit["serving_default"], input_tensor=image[None]).items():
                arrays[f"jit_{i}_{k}"] = v
        # Two images of other sizes in one request: compiled image by image (as one batch, minutes).
        both = run(jit["serving_encoded"], encoded_image_string_tensor=np.array(
            [tf.io.encode_png(image).numpy() for image in images[1:3]], object))
        for k, v in both.items():
            arrays[f"jit_batch_{k}"] = v
    np.savez(out_npz, **arrays)
    with open(out_json, "w") as f:
        json.dump(report, f)
""")


def sample_images():
    """Trained-on images, and two more of the kind at other sizes (one widened with a flat band)."""
    images = list(synthetic_batch(4)["images"][:3])
    more = synthetic_batch(2, size=144, seed=3)["images"]
    images.append(np.pad(more[0], ((0, 0), (0, 40), (0, 0)), constant_values=115))
    images.append(more[1][:, :120])
    return images


@pytest.fixture(scope="module")
def trained(tiny_trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    shutil.copy(tiny_trained.root / "model.keras", root / "model.keras")
    model = tiny_trained.model
    images = sample_images()
    reference = [{k: v.numpy()[0] for k, v in model(image[None]).items()} for image in images]
    return types.SimpleNamespace(root=root, model=model, images=images, reference=reference)


@pytest.fixture(scope="module")
def exported(trained):
    """``export.py`` run as a user would, then a second, XLA-compiled export in-process."""
    base = trained.root / "frcnn"
    result = subprocess.run([sys.executable, "export.py", "--model", str(trained.root / "model.keras"),
                             "--out", str(base)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "exported" in result.stdout and str(base / "1") in result.stdout
    jit = export.export_saved_model(trained.model, trained.root / "frcnn_jit", jit_compile=True)
    return types.SimpleNamespace(base=base, path=base / "1", jit=jit)


@pytest.fixture(scope="module")
def contract(trained, exported):
    root = trained.root
    np.savez(root / "images.npz", **{f"i{i}": im for i, im in enumerate(trained.images)})
    gradient = np.linspace(0, 255, 8000).astype(np.uint8)
    Image.fromarray(np.broadcast_to(gradient[:, None, None], (8000, 8000, 3))).save(root / "large.jpg")
    subprocess.run([sys.executable, "-c", CONTRACT_CHILD, str(exported.path), str(root / "images.npz"),
                    str(root / "out.npz"), str(root / "report.json"), str(exported.jit), str(root / "large.jpg")],
                   cwd=root, check=True, timeout=600)
    with open(root / "report.json") as f:
        report = json.load(f)
    return types.SimpleNamespace(report=report, arrays=dict(np.load(root / "out.npz", allow_pickle=True)))


def assert_same_detections(out, reference, size, atol_px=0.5):
    """OD API outputs of one image vs the Keras model's detections of it."""
    n = int(reference["num_detections"])
    assert int(out["num_detections"]) == n and n > 0
    h, w = size
    np.testing.assert_allclose(out["detection_boxes"][:n] * [h, w, h, w], reference["boxes"][:n], atol=atol_px)
    np.testing.assert_allclose(out["detection_scores"], reference["confidence"], atol=1e-5)
    np.testing.assert_array_equal(out["detection_classes"][:n], reference["labels"][:n] + 1)
    assert (out["detection_classes"][n:] == 0).all()
    names = [s.decode() if isinstance(s, bytes) else s for s in out["detection_class_names"]]
    assert names[:n] == [CLASS_NAMES[c] for c in reference["labels"][:n]] and set(names[n:]) <= {""}
    # The OD API's Faster R-CNN extras: each detection's score is its RoI's softmax for its class;
    # the raw boxes and scores are every RoI's, before NMS.
    multiclass = out["detection_multiclass_scores"]
    assert multiclass.shape == (100, len(CLASS_NAMES) + 1) and not multiclass[n:].any()
    np.testing.assert_allclose(multiclass[np.arange(n), out["detection_classes"][:n].astype(int)],
                               out["detection_scores"][:n], atol=1e-6)
    np.testing.assert_allclose(multiclass[:n].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(multiclass, reference["multiclass_scores"], atol=1e-5)
    np.testing.assert_allclose(out["raw_detection_scores"], reference["raw_scores"], atol=1e-5)
    np.testing.assert_allclose(out["raw_detection_boxes"] * [h, w, h, w], reference["raw_boxes"], atol=atol_px)


def test_layout_and_signatures(exported, contract):
    files = {os.path.relpath(os.path.join(d, f), exported.path) for d, _, fs in os.walk(exported.path) for f in fs}
    assert {"saved_model.pb", "variables/variables.index", export.WARMUP_FILE} <= files
    assert not [n for n in os.listdir(exported.base) if n != "1"]  # no staging folder left behind
    umask = os.umask(0o022)
    os.umask(umask)  # the version folder reads as any folder made here (mkdtemp's was 0700: TF Serving's
    assert os.stat(exported.path).st_mode & 0o777 == 0o777 & ~umask  # account could not load it)
    signatures = contract.report["signatures"]
    assert signatures["serving_default"]["inputs"] == {"input_tensor": ["uint8", [None, None, None, 3]]}
    assert signatures["serving_encoded"]["inputs"] == {"encoded_image_string_tensor": ["string", [None]]}
    assert signatures["tf_example"]["inputs"] == {"tf_example": ["string", [None]]}
    k, r = len(CLASS_NAMES) + 1, tiny_config().rpn.post_nms_top_n[1]
    for name in ("serving_default", "serving_encoded", "tf_example"):
        outputs = signatures[name]["outputs"]
        assert outputs == {"detection_boxes": ["float32", [None, 100, 4]],
                           "detection_scores": ["float32", [None, 100]],
                           "detection_classes": ["float32", [None, 100]],
                           "num_detections": ["float32", [None]],
                           "detection_class_names": ["string", [None, 100]],
                           "detection_multiclass_scores": ["float32", [None, 100, k]],
                           "raw_detection_boxes": ["float32", [None, r, 4]],
                           "raw_detection_scores": ["float32", [None, r, k]]}


def test_every_weight_is_stored_once(trained, exported):
    """The SavedModel's checkpoint holds the model's weights once (keras-team/keras#23553: a
    tracked Keras model is stored twice, as its wrappers and as the tf.Variables they hold)."""
    stored = tf.train.load_checkpoint(os.path.join(exported.path, "variables", "variables"))
    shapes = {name: shape for name, shape in stored.get_variable_to_shape_map().items()
              if name.endswith("VARIABLE_VALUE")}
    assert sum(int(np.prod(shape)) for shape in shapes.values()) == trained.model.count_params()


def test_saved_model_detections_equal_the_keras_model(trained, contract):
    arrays = contract.arrays
    for i, (image, reference) in enumerate(zip(trained.images, trained.reference)):
        alone = {k: arrays[f"default_{i}_{k}"][0] for k in KEYS}
        assert_same_detections(alone, reference, image.shape[:2])
        # One serving_encoded request with every image, of different sizes: each as alone; and
        # as tf.train.Examples.
        for signature in ("encoded", "example"):
            batched = {k: arrays[f"{signature}_{k}"][i] for k in KEYS}
            assert_same_detections(batched, reference, image.shape[:2])
    # The objects of the trained-on images are found with the right class.
    for i in range(3):
        scores, classes = arrays[f"default_{i}_detection_scores"][0], arrays[f"default_{i}_detection_classes"][0]
        assert {1.0, 2.0} <= set(classes[scores > 0.3])


def test_xla_compiled_export_gives_the_same_detections(trained, contract):
    for i in range(2):
        jit = {k: contract.arrays[f"jit_{i}_{k}"][0] for k in KEYS}
        assert_same_detections(jit, trained.reference[i], trained.images[i].shape[:2])
    for i in range(2):  # a batch of two images of other sizes
        jit = {k: contract.arrays[f"jit_batch_{k}"][i] for k in KEYS}
        assert_same_detections(jit, trained.reference[i + 1], trained.images[i + 1].shape[:2])


def test_a_roialign_model_exports_with_xla(trained, tmp_path):
    """RoIAlign (the shapes preset's, the pyramids') has no XLA kernel for CropAndResize: the
    compiled network samples by gathers instead (as traced for the converters), the same
    detections as the export without XLA (before, ``jit_compile`` refused such a model)."""
    import dataclasses

    import keras

    from keras_frcnn.models import build_models

    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, detector=dataclasses.replace(cfg.detector, pool_mode="align"))
    model = build_models(cfg, 2, weights=None, class_names=CLASS_NAMES).model
    model.set_weights(trained.model.get_weights())  # (the trained weights, pooled with RoIAlign)
    assert isinstance(model, keras.Model) and model.layers_.roi_pooling.mode == "align"
    paths = [export.export_saved_model(model, tmp_path / name, jit_compile=jit, warmup=False)
             for name, jit in (("plain", False), ("jit", True))]
    plain, jit = (tf.saved_model.load(str(path)).signatures["serving_default"] for path in paths)
    for image in trained.images[:2]:
        reference, compiled = (
            {k: v.numpy()[0] for k, v in signature(input_tensor=tf.constant(image[None])).items()}
            for signature in (plain, jit))
        n = int(reference["num_detections"])
        assert n > 0 and int(compiled["num_detections"]) == n
        np.testing.assert_allclose(compiled["detection_boxes"], reference["detection_boxes"], atol=1e-4)
        np.testing.assert_allclose(compiled["detection_scores"], reference["detection_scores"], atol=1e-5)
        np.testing.assert_array_equal(compiled["detection_classes"], reference["detection_classes"])
    # Image by image in the graph, as a batch of two (padded alike): the same detections.
    size = np.max([image.shape[:2] for image in trained.images[:2]], axis=0)
    batch = np.zeros((2, *size, 3), np.uint8)
    for i, image in enumerate(trained.images[:2]):
        batch[i, :image.shape[0], :image.shape[1]] = image
    both = [{k: v.numpy() for k, v in signature(input_tensor=tf.constant(batch)).items()} for signature in (plain, jit)]
    np.testing.assert_array_equal(both[1]["num_detections"], both[0]["num_detections"])
    np.testing.assert_allclose(both[1]["detection_scores"], both[0]["detection_scores"], atol=1e-5)
    # The loop over the batch holds no uint8 TensorList (no GPU kernel: a GPU server ran it on the host).
    assert export.ops_without_gpu_kernels(paths[1], "serving_default") == {}


def test_bad_requests_fail_alone_or_give_valid_detections(contract):
    bad = contract.report["bad_requests"]
    for name, entry in bad.items():
        assert entry["next_ok"], f"{name}: the next request failed"
    for name in ("empty string", "random bytes", "truncated jpeg", "one bad image in a batch"):
        assert bad[name]["error"][0] == "InvalidArgumentError", (name, bad[name])
    # Named: the input and the image's place in the batch (TensorFlow's decoder names neither).
    for name, place in (("random bytes", 0), ("empty string", 0), ("one bad image in a batch", 1),
                        ("a signature alone", 1)):
        assert re.search(rf"encoded_image_string_tensor\[{place}\]: not an image file TensorFlow decodes",
                         bad[name]["error"][1]), (name, bad[name])
    for name in ("example without image/encoded", "not an example", "example of junk bytes"):
        assert bad[name]["error"][0] == "InvalidArgumentError", (name, bad[name])
    assert "image/encoded" in bad["example without image/encoded"]["error"][1]
    for name in ("float input_tensor", "int32 input_tensor"):
        assert bad[name]["error"][0] == "InvalidArgumentError" and "uint8" in bad[name]["error"][1]
    for name in ("rank-3 input_tensor", "4-channel input_tensor", "scalar string"):
        key = "encoded_image_string_tensor" if "string" in name else "input_tensor"
        assert bad[name]["error"][0] == "InvalidArgumentError" and key in bad[name]["error"][1], (name, bad[name])
    assert "height and a width" in bad["zero-height input_tensor"]["error"][1]
    for name, key in (("palette bmp", "encoded_image_string_tensor"), ("palette bmp in an example", "tf_example")):
        assert bad[name]["error"][0] == "InvalidArgumentError", (name, bad[name])
        assert re.search(rf"{key}\[0\]: a BMP with a colour palette", bad[name]["error"][1]), (name, bad[name])
    # A BMP's signed width below 0 was refused as "over 179 megapixels" (read unsigned): its own reason now.
    assert re.search(r"encoded_image_string_tensor\[1\]: a BMP whose header states a width of 0 or below",
                     bad["negative-width bmp"]["error"][1]), bad["negative-width bmp"]
    # An animated WebP (TensorFlow's decoder is not safe on some) fails its request by place.
    assert re.search(r"encoded_image_string_tensor\[1\]: an animated WebP", bad["animated webp"]["error"][1])
    # A PNG stating 2,500 megapixels (7.5 GB of pixels from a small file) fails its request, not the server.
    assert re.search(r"encoded_image_string_tensor\[1\]: its header states over 179 megapixels",
                     bad["png bomb"]["error"][1])
    assert re.search(r"encoded_image_string_tensor\[0\]: its header states over 179 megapixels",
                     bad["webp bomb"]["error"][1])
    for name, place in (("gif picture bomb", 0), ("gif of many pictures", 1)):  # (a 1 x 1 screen each)
        assert re.search(rf"encoded_image_string_tensor\[{place}\]: a GIF with a picture over 179 megapixels, or "
                         "over 537 in all", bad[name]["error"][1]), (name, bad[name])  # (a real one of 10 kB took 2.7 GB, three of them 14.7)
    for name in ("1x1 image", "8000x8000 jpeg", "grayscale png", "rgba png", "16-bit png", "animated gif", "bmp",
                 "rgba webp"):
        assert "error" not in bad[name] and bad[name]["valid"], (name, bad[name])
        assert bad[name]["shapes"]["detection_boxes"] == [1, 100, 4]
    for name in ("empty batch (encoded)", "empty batch (input_tensor)", "empty batch (tf_example)"):
        assert bad[name]["shapes"]["detection_boxes"] == [0, 100, 4] and bad[name]["shapes"]["num_detections"] == [0]
        assert bad[name]["shapes"]["detection_multiclass_scores"] == [0, 100, len(CLASS_NAMES) + 1]
    # The formats that carry the same picture give its detections (GIF: its first frame, 8-bit).
    reference = contract.arrays["default_0_detection_boxes"]
    for name in ("rgba png", "16-bit png", "bmp", "rgba webp"):
        np.testing.assert_allclose(contract.arrays[f"bad_{name}_boxes"], reference, atol=1e-5)
    # An 8000 x 8000 JPEG (192 MB decoded) is resized in the graph from its uint8 pixels: the
    # request raises the process's peak memory by far less than a float copy (768 MB) would.
    assert bad["8000x8000 jpeg"]["peak_growth_mb"] < 700, bad["8000x8000 jpeg"]
    # Three in one request (or three requests TF Serving's batching joins) are each resized as
    # decoded, two at a time: the stack holds resized copies, not three decoded images padded to
    # the largest (before: 3.3 GB more for this request in a SavedModel of the shapes model).
    three = bad["three 8000x8000 jpegs"]
    assert "error" not in three and three["valid"] and three["shapes"]["detection_boxes"] == [3, 100, 4], three
    assert three["peak_growth_mb"] < 1000, three
    for i in range(3):
        np.testing.assert_array_equal(contract.arrays["bad_three 8000x8000 jpegs_boxes"][i],
                                      contract.arrays["bad_8000x8000 jpeg_boxes"][0])


def test_eight_threads_get_the_detections_of_one_caller(contract):
    assert contract.report["threads"] == []


def test_warmup_requests_replay_against_the_model(contract):
    assert sorted(contract.report["warmup"]) == [
        ["serving_default", "frcnn", ["input_tensor"], True],
        ["serving_encoded", "frcnn", ["encoded_image_string_tensor"], True],
        ["tf_example", "frcnn", ["tf_example"], True]]


# serving_encoded's decoding map_fn builds a ragged batch of uint8 images, and the text of a refused
# image's error ("encoded_image_string_tensor[1]: ..."): host work at the edge.
DECODING_OPS = {"RaggedTensorToVariant", "RaggedTensorToTensor", "TensorListSetItem", "TensorListStack", "AsString",
                "StringJoin"}


def test_every_op_on_the_serving_path_has_a_gpu_kernel(exported, tmp_path):
    """TensorFlow's kernel registry (it lists CUDA kernels on a CPU-only machine too), per op and
    dtype, over everything the signatures' outputs depend on: no op a GPU server would have to run
    on its CPU, but decoding and the ragged batch it builds; no Python ops anywhere."""
    assert export.ops_without_gpu_kernels(exported.path, "serving_default") == {}
    assert set(export.ops_without_gpu_kernels(exported.path, "serving_encoded")) <= DECODING_OPS
    # tf_example parses the proto on the host, then decodes as serving_encoded.
    assert set(export.ops_without_gpu_kernels(exported.path, "tf_example")) <= DECODING_OPS | {"ParseExampleV2"}
    ops = export.graph_op_types(exported.path)
    assert "Conv2D" in ops and "DecodeImage" in ops  # the walk reaches the nested functions
    assert not ops & export.PYTHON_OPS
    # The check sees a CPU-only op nested two functions deep, and a dtype without a GPU kernel.
    inner = tf.function(lambda b, s: tf.image.combined_non_max_suppression(b, s, 5, 5)[0])
    outer = tf.function(lambda b, s, i: (inner(b, s) * 2.0, tf.gather(i, [0, 0], axis=1)),
                        input_signature=[tf.TensorSpec([1, 4, 1, 4]), tf.TensorSpec([1, 4, 1]),
                                         tf.TensorSpec([1, 4, 4, 3], tf.uint8)])
    module = tf.Module()
    module.f = outer
    tf.saved_model.save(module, str(tmp_path / "bad"), signatures={"serving_default": outer})
    missing = export.ops_without_gpu_kernels(tmp_path / "bad", "serving_default")
    assert set(missing) == {"CombinedNonMaxSuppression", "GatherV2"} and "uint8" in missing["GatherV2"]


@pytest.mark.slow  # (the suite's budget: a fresh process serving the signature is the contract fixture's)
def test_saved_model_cli_runs_the_signature(trained, exported, tmp_path):
    image = trained.images[1]
    np.save(tmp_path / "image.npy", image[None])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", str(exported.path), "--all"], capture_output=True, text=True,
                           env=env, cwd=tmp_path, check=True, timeout=300).stdout
    assert "signature_def['serving_encoded']" in shown and "tensorflow/serving/predict" in shown
    subprocess.run([cli, "run", "--dir", str(exported.path), "--tag_set", "serve", "--signature_def",
                    "serving_default", "--inputs", f"input_tensor={tmp_path / 'image.npy'}",
                    "--outdir", str(tmp_path / "out")], capture_output=True, env=env, cwd=tmp_path,
                   check=True, timeout=300)
    out = {k: np.load(tmp_path / "out" / f"{k}.npy", allow_pickle=True)[0] for k in KEYS}
    assert_same_detections(out, trained.reference[1], image.shape[:2])


def test_versions_are_numbered_and_never_overwritten(trained, exported):
    assert export.next_version(exported.base) == 2
    with pytest.raises(FileExistsError, match="immutable"):
        export.export_saved_model(trained.model, exported.base, version=1)
    # A version folder given as the base path: refused (a version 1/1/ was written inside it).
    with pytest.raises(FileExistsError, match=r"1 is a SavedModel \(one version of a model\); give its base path"):
        export.export_saved_model(trained.model, os.path.join(exported.base, "1"))
    result = subprocess.run([sys.executable, "export.py", "--model", str(trained.root / "missing.keras"),
                             "--out", str(exported.base)], cwd=REPO, capture_output=True, text=True)
    assert result.returncode != 0 and "missing.keras" in result.stderr


# Two exports racing for a version (~12 s of the suite): under -m slow for the suite's budget;
# the numbering and the refusal to overwrite stay (test_versions_are_numbered_and_never_overwritten).
@pytest.mark.slow
def test_two_exports_at_once_take_two_versions(trained, tmp_path, monkeypatch):
    """Two exports into one base path both see version 1 free; the one that renames second takes
    the next version (or, with --version given, fails as a taken version does)."""
    rename = os.rename

    def other_export_first(source, target):  # the other export's version 1 lands meanwhile
        if target.endswith(os.sep + "1") and not os.path.exists(target):
            os.makedirs(os.path.join(target, "variables"))
        return rename(source, target)

    monkeypatch.setattr(os, "rename", other_export_first)
    assert export.export_saved_model(trained.model, tmp_path / "m", warmup=False) == str(tmp_path / "m" / "2")
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]  # no staging folder left
    with pytest.raises(FileExistsError, match="immutable"):
        export.export_saved_model(trained.model, tmp_path / "n", version=1, warmup=False)
    assert sorted(os.listdir(tmp_path / "n")) == ["1"]


def test_bfloat16_export_for_cpu_serving(trained, tmp_path):
    """``--precision bfloat16`` (what export.py does with a mixed_bfloat16 model): bf16
    convolutions and fc layers in the graph, their weights stored in bf16 (no cast per request),
    float32 outputs, and the detections of the float32 model up to bf16 rounding."""
    result = subprocess.run([sys.executable, "export.py", "--model", str(trained.root / "model.keras"),
                             "--out", str(tmp_path / "bf16"), "--precision", "bfloat16"],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "; bfloat16)" in result.stdout  # the float32 model went out in its bfloat16 form
    path = tmp_path / "bf16" / "1"
    from tensorflow.core.protobuf import saved_model_pb2

    stored = tf.train.load_checkpoint(str(tmp_path / "bf16" / "1" / "variables" / "variables"))
    dtypes = {name: dtype for name, dtype in stored.get_variable_to_dtype_map().items()
              if name.endswith("VARIABLE_VALUE")}
    shapes = stored.get_variable_to_shape_map()
    largest = max(dtypes, key=lambda name: np.prod(shapes[name]))
    assert dtypes[largest] == tf.bfloat16  # fc6's kernel
    assert tf.float32 not in {d for n, d in dtypes.items() if len(shapes[n]) > 1}  # no float32 kernel
    assert export.ops_without_gpu_kernels(path, "serving_default") == {}

    proto = saved_model_pb2.SavedModel.FromString((tmp_path / "bf16" / "1" / "saved_model.pb").read_bytes())
    conv_types = {node.attr["T"].type for f in proto.meta_graphs[0].graph_def.library.function
                  for node in f.node_def if node.op in ("Conv2D", "MatMul", "BatchMatMulV2")}
    assert tf.bfloat16.as_datatype_enum in conv_types
    loaded = tf.saved_model.load(str(path)).signatures["serving_default"]
    for image, reference in list(zip(trained.images, trained.reference))[:3]:
        out = {k: v.numpy()[0] for k, v in loaded(input_tensor=tf.constant(image[None])).items()}
        assert out["detection_boxes"].dtype == np.float32
        h, w = image.shape[:2]
        # The best detection of each trained class: same class, box within a few pixels.
        for cls in (1, 2):
            ours = np.flatnonzero(out["detection_classes"] == cls)
            theirs = np.flatnonzero(reference["labels"] == cls - 1)
            assert len(ours) and len(theirs)
            np.testing.assert_allclose(out["detection_boxes"][ours[0]] * [h, w, h, w],
                                       reference["boxes"][theirs[0]], atol=3.0)
            assert abs(out["detection_scores"][ours[0]] - reference["confidence"][theirs[0]]) < 0.05


# --- the serving kit ------------------------------------------------------------------------------


def encoded(image, fmt="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(exported):
    from serving_double import ServingDouble

    with ServingDouble("frcnn", exported.base) as double:
        yield double


def test_client_over_grpc_and_rest_gets_the_keras_detections(trained, server):
    from serving import client

    data = [encoded(im) for im in trained.images]
    over_grpc = client.predict_grpc(data, server.grpc_target, "frcnn")
    over_rest = client.predict_rest(data, server.rest_url, "frcnn", version=1)
    rest_pixels = client.predict_rest(data[3:4], server.rest_url, "frcnn", signature="serving_default")
    grpc_pixels = client.predict_grpc(data[:1], server.grpc_target, "frcnn", signature="serving_default")
    for got in (over_grpc, over_rest):
        assert len(got) == len(trained.images)
        for detections, image, reference in zip(got, trained.images, trained.reference):
            n = int(reference["num_detections"])
            h, w = image.shape[:2]
            np.testing.assert_allclose(detections["boxes"] * [h, w, h, w], reference["boxes"][:n], atol=0.5)
            np.testing.assert_allclose(detections["scores"], reference["confidence"][:n], atol=1e-5)
            assert detections["class_names"] == [CLASS_NAMES[c] for c in reference["labels"][:n]]
            np.testing.assert_array_equal(detections["classes"], reference["labels"][:n] + 1)
    np.testing.assert_allclose(rest_pixels[0]["boxes"], over_rest[3]["boxes"], atol=1e-6)
    np.testing.assert_allclose(grpc_pixels[0]["boxes"], over_grpc[0]["boxes"], atol=1e-6)


def test_client_decodes_16_bit_grey_as_the_model_does():
    """serving_default's pixels from the client equal those serving_encoded decodes: a 16-bit
    greyscale PNG keeps its high byte (Pillow's conversion made it white)."""
    from serving import client

    data = encoded(np.array([[0, 383, 0x5432, 0x54FF, 65535]] * 2, np.uint16))
    expected = tf.io.decode_image(data, channels=3, dtype=tf.uint8).numpy()
    assert expected[0, :, 0].tolist() == [0, 1, 84, 84, 255]
    np.testing.assert_array_equal(client.decode_rgb(data), expected)


def test_client_reports_server_errors(server):
    from serving import client

    with pytest.raises(client.ServingError, match=r"(?s)INVALID_ARGUMENT: .*encoded_image_string_tensor\[.*0.*\]: not "
                                                  "an image file TensorFlow decodes"):
        client.predict_grpc([b"not an image"], server.grpc_target, "frcnn")
    with pytest.raises(client.ServingError, match=r"(?s)HTTP 400: .*encoded_image_string_tensor\[.*1.*\]: not an image"):
        client.predict_rest([encoded(np.zeros((8, 8, 3), np.uint8)), b""], server.rest_url, "frcnn")
    with pytest.raises(client.ServingError, match="NOT_FOUND"):
        client.predict_grpc([b"x"], server.grpc_target, "no-such-model")


def test_client_command_prints_and_draws(trained, server, tmp_path):
    paths = []
    for i, image in enumerate(trained.images[:2]):
        paths.append(tmp_path / f"image{i}.jpg")
        paths[-1].write_bytes(encoded(image, "JPEG"))
    result = subprocess.run([sys.executable, "-m", "serving.client", "--rest", server.rest_url, "--model", "frcnn",
                             "--min-score", "0.5", "--out", str(tmp_path / "drawn"), *map(str, paths)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "image0.jpg: " in result.stdout and "square" in result.stdout and "wide" in result.stdout
    drawn = np.asarray(Image.open(tmp_path / "drawn" / "image0.png"))
    assert drawn.shape == trained.images[0].shape and not np.array_equal(drawn, np.asarray(Image.open(paths[0])))
    failed = subprocess.run([sys.executable, "-m", "serving.client", "--grpc", server.grpc_target, __file__],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert failed.returncode == 1 and "INVALID_ARGUMENT" in failed.stderr


def test_serving_config_files_parse():
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    with open(os.path.join(REPO, "serving", "models.config")) as f:
        config = text_format.Parse(f.read(), model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == "frcnn" and model.base_path == "/models/frcnn" and model.model_platform == "tensorflow"
    with open(os.path.join(REPO, "serving", "run_gpu.sh")) as f:
        script = f.read()
    assert "--gpus all" in script and "tensorflow/serving:" in script and ":/models/frcnn" in script
