"""Exports for other runtimes (ONNX Runtime, OpenVINO, LiteRT): each artifact, written by
export.py, runs in its runtime in a fresh process where keras_frcnn and Keras cannot be imported,
and gives the Keras model's detections."""

import errno
import importlib.util
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
from keras_frcnn import cli, formats, predict
from keras_frcnn.models import build_models, forward
from keras_frcnn.preprocessing import for_converters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_NAMES = ["square", "wide"]
RUNTIMES = ["onnx", "openvino", "litert"]

# A user's own code: the runtime's API only, keras_frcnn and Keras made unimportable.
RUNTIME_CHILD = textwrap.dedent(r"""
    import sys
    sys.modules["keras_frcnn"] = None
    sys.modules["keras"] = None
    import json
    import numpy as np

    fmt, path, images_npz, out_npz, out_json = sys.argv[1:6]
    images = [v for _, v in sorted(np.load(images_npz).items(), key=lambda kv: int(kv[0][1:]))]
    if fmt == "onnx":
        import onnxruntime as ort
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        names = json.loads(session.get_modelmeta().custom_metadata_map["class_names"])
        outputs = [o.name for o in session.get_outputs()]
        run = lambda x: dict(zip(outputs, session.run(None, {"input_tensor": x})))
    elif fmt == "openvino":
        import openvino as ov
        core = ov.Core()
        model = core.read_model(path)
        names = json.loads(model.get_rt_info(["model_info", "class_names"]).astype(str))
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        run = lambda x: {o.get_any_name(): v for o, v in compiled(x).items()}
    else:
        from ai_edge_litert.interpreter import Interpreter
        runner = Interpreter(model_path=path).get_signature_runner("serving_default")
        names = open(path[: -len(".tflite")] + ".labels.txt").read().split("\n")[:-1]
        run = lambda x: runner(input_tensor=x)
    arrays = {}
    for i, image in enumerate(images):
        for k, v in run(image[None]).items():
            arrays[f"{i}_{k}"] = np.asarray(v)
    # A batch of two images of one size (a dynamic batch dimension).
    for k, v in run(np.stack([images[0], images[1]])).items():
        arrays[f"batch_{k}"] = np.asarray(v)
    np.savez(out_npz, **arrays)
    with open(out_json, "w") as f:
        json.dump({"names": names}, f)
""")


def scene(height, width, seed):
    """A noisy image of another size with a red square and a blue wide box; at 97 x 131, seed 2,
    the tiny model's RoIs of two detections tie exactly with others (LiteRT's NMS kept the other
    of each, 13 px away, and lost a detection: NMS is given distinct ranks there)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(90, 140, (height, width, 3)).astype(np.uint8)
    side = max(8, min(height, width) // 3)
    y, x = rng.integers(0, max(1, height - side)), rng.integers(0, max(1, width - side))
    image[y:y + side, x:x + side] = (230, 40, 40)
    side = max(6, min(height, width) // 4)
    y, x = rng.integers(0, max(1, height - side)), rng.integers(0, max(1, width - int(side * 1.6)))
    image[y:y + side, x:x + int(side * 1.6)] = (40, 40, 230)
    return image


def with_images(model, root):
    """Two trained-on images (one size) and two of other sizes and aspects, with ``model``'s
    detections of each, as the tests' fixture."""
    images = list(synthetic_batch(2)["images"]) + [synthetic_batch(1, size=144, seed=3)["images"][0][:, :120],
                                                   scene(97, 131, 2)]
    reference = [{k: v.numpy()[0] for k, v in model(image[None]).items()} for image in images]
    np.savez(root / "images.npz", **{f"i{i}": im for i, im in enumerate(images)})
    return types.SimpleNamespace(root=root, model=model, images=images, reference=reference)


@pytest.fixture(scope="module")
def trained(tiny_trained, tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    shutil.copy(tiny_trained.root / "model.keras", root / "model.keras")
    return with_images(tiny_trained.model, root)


@pytest.fixture(scope="module")
def trained_bn8(tmp_path_factory):
    """The shapes preset's kind of base: ZF with batch norm (folded or not by each converter)
    and feature stride 8."""
    import dataclasses

    import keras

    from keras_frcnn import config as C
    from keras_frcnn.models import build_models

    root = tmp_path_factory.mktemp("formats_bn8")
    cfg = dataclasses.replace(tiny_config(), base_batch_norm=True,
                              anchors=C.AnchorConfig(stride=8, base_size=8, scales=(3.0, 6.0)))
    keras.utils.set_random_seed(0)
    net = build_models(cfg, 2, weights=None, class_names=CLASS_NAMES)
    joint = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
    joint.fit(tf.data.Dataset.from_tensors(synthetic_batch(4)).repeat(150), verbose=0)
    net.model.save(root / "model.keras")
    return with_images(net.model, root)


KINDS = {"tiny": "trained", "batch norm, stride 8": "trained_bn8"}  # the ResNets': test_resnet


def export_script():
    """export.py, the command, loaded as a module: its main() runs in this process."""
    spec = importlib.util.spec_from_file_location("export_script", os.path.join(REPO, "export.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def export(trained, fmt):
    """The artifact as ``python export.py --format fmt`` writes it (its main(), in process)."""
    out = trained.root / f"frcnn{formats.SUFFIXES[fmt]}"
    if not out.exists():
        status = export_script().main(["--model", str(trained.root / "model.keras"), "--format", fmt,
                                       "--out", str(trained.root / "frcnn")])  # the suffix is added
        assert status == 0 and out.exists()
    return out


def assert_same_detections(out, reference, size, require_detections=True):
    """The four OD API outputs of one image vs the Keras model's detections of it: the same
    detections in the same order, boxes within 1 px."""
    n = int(reference["num_detections"])
    assert int(out["num_detections"]) == n and (n > 0 or not require_detections)
    h, w = size
    np.testing.assert_array_equal(out["detection_classes"][:n], reference["labels"][:n] + 1)
    assert not out["detection_classes"][n:].any()
    np.testing.assert_allclose(out["detection_scores"], reference["confidence"], atol=1e-4)
    np.testing.assert_allclose(out["detection_boxes"][:n] * [h, w, h, w], reference["boxes"][:n], atol=1.0)


# The batch-norm model is there for the converters that fold batch norm (OpenVINO, LiteRT); its
# ONNX export (~45 s of the suite) repeats the tiny model's tf2onnx path, and its OpenVINO (~28 s)
# and LiteRT (~33 s with its training) ones run with -m slow: the default suite folds batch norm
# in LiteRT through the ResNet-50 C4 model (test_resnet) and runs the tiny model in LiteRT.
@pytest.mark.parametrize("kind, fmt", [("tiny", "litert")] + [
    # OpenVINO's conversion (15 s) under -m slow for the suite's budget; ONNX Runtime's run of every
    # test image (~25 s more) too, for the suite's budget, 598 s on a 2-core Ice Lake Xeon (2026-12-03): the ONNX export is run by
    # default through predict (test_predict_draws_the_detections_of_an_exported_model[onnx]).
    pytest.param("tiny", fmt, marks=pytest.mark.slow) for fmt in ("onnx", "openvino")] + [
    pytest.param("batch norm, stride 8", fmt, marks=pytest.mark.slow) for fmt in ("openvino", "litert")])
def test_export_runs_in_its_runtime_without_keras_frcnn(request, kind, fmt):
    check_runtime(request.getfixturevalue(KINDS[kind]), fmt)


def test_a_labels_file_shorter_than_the_model_s_classes_is_named(trained, tmp_path):
    """LiteRT's labels file beside the model (a SavedModel's assets.extra/labels.txt alike) with
    fewer names than the classes it detects (edited, or another export's): an error naming the
    file, not predict's IndexError traceback."""
    from keras_frcnn.data import DataError

    path = shutil.copy(export(trained, "litert"), tmp_path / "m.tflite")
    (tmp_path / "m.labels.txt").write_text("")
    runtime = formats.RuntimeModel(path)
    assert runtime.labels_file == str(tmp_path / "m.labels.txt")
    with pytest.raises(DataError, match=r"m\.labels\.txt: 0 class names, but the model detects class \d: not this "
                                        r"model's labels file"):
        runtime(np.stack(trained.images[:1]))


def check_runtime(trained, fmt, every_image_detects=True):
    """``fmt``'s artifact of ``trained`` (``with_images``), run by its runtime in a process
    without keras_frcnn or Keras, gives the Keras model's detections (``every_image_detects``:
    and each test image has some; else at least one has)."""
    path = export(trained, fmt)
    out_npz, out_json = trained.root / f"{fmt}.npz", trained.root / f"{fmt}.json"
    subprocess.run([sys.executable, "-c", RUNTIME_CHILD, fmt, str(path), str(trained.root / "images.npz"),
                    str(out_npz), str(out_json)], check=True, timeout=600)
    arrays = dict(np.load(out_npz))
    assert json.loads(out_json.read_text())["names"] == CLASS_NAMES
    for i, (image, reference) in enumerate(zip(trained.images, trained.reference)):
        out = {k: arrays[f"{i}_{k}"][0] for k in formats.OUTPUT_NAMES}
        assert out["detection_boxes"].shape == (100, 4)
        assert_same_detections(out, reference, image.shape[:2], every_image_detects)
        if i < 2:
            batched = {k: arrays[f"batch_{k}"][i] for k in formats.OUTPUT_NAMES}
            assert_same_detections(batched, reference, image.shape[:2], every_image_detects)
    assert sum(int(r["num_detections"]) for r in trained.reference) > 0


# A SavedModel base path (~25 s: an export and a process) under -m slow; SavedModels run in a
# fresh process in test_export, predict's other paths here.
@pytest.mark.parametrize("fmt", ["onnx", pytest.param("saved_model", marks=pytest.mark.slow)])
def test_predict_draws_the_detections_of_an_exported_model(trained, fmt, tmp_path):
    if fmt == "saved_model":  # a TF Serving base path: predict takes its newest version
        from keras_frcnn.export import export_saved_model

        export_saved_model(trained.model, tmp_path / "frcnn", warmup=False)
        path = tmp_path / "frcnn"
    else:
        path = export(trained, fmt)
    image_path = tmp_path / "image.png"
    Image.fromarray(trained.images[2]).save(image_path)
    # What predict prints for the Keras model, from its own function in this process.
    expected = []
    predict.predict_files(trained.model, [str(image_path)], str(tmp_path / "keras"), log=expected.append)
    result = subprocess.run([sys.executable, "-m", "keras_frcnn.predict", "--model", str(path),
                             str(image_path), "--out", str(tmp_path / "drawn"), "--labels", "yolo"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "drawn" / "image.png").exists()
    # The class list of YOLO's labels: every runtime knows it (a SavedModel wrote an empty one: its
    # names came from the detections seen; export writes assets.extra/labels.txt now).
    assert (tmp_path / "drawn" / "classes.txt").read_text().split("\n")[:-1] == list(trained.model.class_names)
    printed = result.stdout.strip().rsplit(" -> ", 1)[0]
    assert printed == expected[0].rsplit(" -> ", 1)[0] and "detections >= 0.3" in printed


def test_predict_reads_folders_names_bad_files_and_keeps_every_drawing(trained, tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(trained.images[0]).save(folder / "a.jpg")
    Image.fromarray(trained.images[1]).save(folder / "a.png")  # the same name: its own drawing
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    (folder / "notes.txt").write_text("not an image")
    Image.fromarray(trained.images[2]).save(folder / "sub" / "deeper.png")  # subfolders are not read
    warnings = []
    written, failed = predict.predict_files(trained.model, [str(folder)], str(tmp_path / "out"),
                                            log=lambda line: None, warn=warnings.append)
    assert [os.path.basename(p) for p in written] == ["a.png", "a_2.png"]
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "a_2.png", "detections.json"]
    # The detections as data: every image done, boxes as [xmin, ymin, xmax, ymax] pixels
    listed = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [(os.path.basename(e["image"]), os.path.basename(e["drawing"])) for e in listed] == [
        ("a.jpg", "a.png"), ("a.png", "a_2.png")]
    out = {k: np.asarray(v)[0] for k, v in trained.model(np.asarray(Image.open(folder / "a.png"))[None]).items()}
    kept = out["confidence"][:int(out["num_detections"])] >= 0.3
    assert kept.any() and listed[1]["height"] == trained.images[1].shape[0]
    np.testing.assert_allclose([d["box"] for d in listed[1]["detections"]],
                               out["boxes"][:len(kept)][kept][:, [1, 0, 3, 2]], atol=0.01)
    assert [d["class"] for d in listed[1]["detections"]] == [
        trained.model.class_names[label] for label in out["labels"][:len(kept)][kept]]
    assert failed == [str(folder / "broken.jpg")]
    assert len(warnings) == 1 and f"error: {folder / 'broken.jpg'}: image file is corrupt" in warnings[0]
    # Again into that folder with only the broken image: its listing is this run's (empty), not the last one's.
    assert predict.predict_files(trained.model, [str(folder / "broken.jpg")], str(tmp_path / "out"),
                                 log=lambda line: None, warn=lambda line: None) == ([], [str(folder / "broken.jpg")])
    assert json.loads((tmp_path / "out" / "detections.json").read_text()) == []
    # Drawn into the images' own folder: a.png (an input) is not written over; its drawing is a_3.png.
    before = (folder / "a.png").read_bytes()
    written, _ = predict.predict_files(trained.model, [str(folder / "a.jpg"), str(folder / "a.png")], str(folder),
                                       log=lambda line: None)
    assert [os.path.basename(p) for p in written] == ["a_2.png", "a_3.png"] and (folder / "a.png").read_bytes() == before
    for name in ("a_2.png", "a_3.png", "detections.json"):
        (folder / name).unlink()
    # A folder's TIFF or HEIC files are named as left out, not passed over in silence; a JPEG saved
    # as .jfif, a BMP as .dib are read.
    Image.fromarray(trained.images[0]).save(folder / "scan.tif")
    Image.fromarray(trained.images[0]).save(folder / "c.jfif", format="JPEG")
    Image.fromarray(trained.images[0]).save(folder / "d.dib", format="BMP")  # (Windows' other BMP suffix)
    # So are a link to no file, the subfolder of images, and a file given again.
    os.symlink(folder / "gone.jpg", folder / "link.jpg")
    Image.fromarray(trained.images[0]).save(folder / "IMG_0001", format="JPEG")  # (no suffix: named, left out)
    (folder / "README").write_text("not an image")
    told = []
    assert [os.path.basename(p) for p in predict.image_paths([str(folder), str(folder / "a.png")],
                                                             warn=told.append)] == [
        "a.jpg", "a.png", "broken.jpg", "c.jfif", "d.dib"]
    assert predict.read_image(str(folder / "d.dib")).shape == trained.images[0].shape
    assert told == [f"warning: {folder}: 1 image file(s) without a suffix left out (e.g. IMG_0001): give them by "
                    "name, or name them .jpg / .png",
                    f"warning: {folder}: 1 image file(s) of formats TensorFlow does not decode left out (e.g. "
                    "scan.tif): convert them to JPEG or PNG",
                    f"warning: {folder}: 1 link(s) to no file left out (e.g. link.jpg)",
                    f"warning: {folder}: 1 subfolder(s) of images not read (e.g. sub/): give them too to detect in "
                    "them", "warning: 1 image file(s) given twice (as themselves or in a folder given): each read once"]


def test_predict_reads_and_lists_an_image_named_in_bytes_that_are_not_utf8(trained, tmp_path, capsys):
    """A Linux file name in Latin-1 (``caf\\xe9.png``; Python's str of it holds a surrogate) was
    refused naming no file (a string tensor does not take it), and once read, ended the run writing
    detections.json. Now it is detected and drawn; its lines print it as ``caf\\udce9``; the JSON
    listings (UTF-8) hold it as the escape ``\\udce9`` that Python's ``json`` reads back to the
    name; VOC XML, which cannot hold it, is not written for it, warned."""
    folder = os.fsencode(str(tmp_path / "photos"))
    os.makedirs(folder)
    odd = os.fsdecode(os.path.join(folder, b"caf\xe9.png"))
    try:
        Image.fromarray(trained.images[1]).save(odd)
    except OSError:
        pytest.skip("this file system refuses file names that are not UTF-8")
    Image.fromarray(trained.images[0]).save(tmp_path / "photos" / "plain.png")
    out = tmp_path / "out"
    assert predict.main(["--model", str(trained.root / "model.keras"), str(tmp_path / "photos"), "--out", str(out),
                         "--labels", "voc"]) == 0
    printed = capsys.readouterr()
    assert "caf\\udce9.png: " in printed.out and "no VOC labels written: the file's name is not UTF-8" in printed.err
    listed = json.loads((out / "detections.json").read_bytes().decode("utf-8"))
    assert [entry["image"] for entry in listed] == [odd, str(tmp_path / "photos" / "plain.png")]
    assert os.path.exists(listed[0]["drawing"]) and listed[0]["detections"]
    assert sorted(os.listdir(out / "annotations")) == ["plain.xml"]
    predict.predict_files(trained.model, [odd], str(out), labels="labelme", log=lambda line: None)
    labelme = json.loads(next((out / "labelme").glob("*.json")).read_bytes().decode("utf-8"))
    assert os.path.normpath(os.path.join(out / "labelme", labelme["imagePath"])) == odd


def test_predict_an_image_only_tensorflow_refuses_fails_alone(trained, tmp_path, monkeypatch):
    """A file that passes the Pillow check but not TensorFlow's decoder ended the whole run with
    TensorFlow's error naming no file (status 2, the images after it never done): it is named and
    skipped like any unreadable image."""
    from keras_frcnn.data import image_files

    monkeypatch.setattr(image_files, "check_image", lambda path: None)  # as if Pillow had read it
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(trained.images[0]).save(folder / "a.png")
    (folder / "b.png").write_bytes((folder / "a.png").read_bytes()[:-30])
    Image.fromarray(trained.images[1]).save(folder / "c.png")
    warnings = []
    written, failed = predict.predict_files(trained.model, [str(folder)], str(tmp_path / "out"),
                                            log=lambda line: None, warn=warnings.append)
    assert [os.path.basename(p) for p in written] == ["a.png", "c.png"] and failed == [str(folder / "b.png")]
    assert len(warnings) == 1 and re.fullmatch(
        rf"error: {re.escape(str(folder / 'b.png'))}: TensorFlow cannot decode it \(Invalid PNG data, size \d+\)",
        warnings[0])


def test_predict_reads_a_webp_with_transparency_and_names_an_animated_one(trained, tmp_path):
    """TensorFlow's WebP decoder gives a WebP with transparency as RGBA and failed when asked for
    3 channels: the whole predict run stopped with an error naming no file. It is read now (its
    alpha dropped), the same pixels as the opaque one; an animated WebP, on which that decoder
    corrupts its memory, is named and skipped, the others done."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rgb = trained.images[0]
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])).save(folder / "alpha.webp", lossless=True)
    Image.fromarray(rgb).save(folder / "opaque.webp", lossless=True)
    frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
    frames[0].save(folder / "moving.webp", save_all=True, append_images=frames[1:], lossless=True)
    told = []
    written, failed = predict.predict_files(trained.model, [str(folder)], str(tmp_path / "out"), log=lambda line: None,
                                            warn=told.append)
    assert [os.path.basename(p) for p in written] == ["alpha.png", "opaque.png"]
    assert failed == [str(folder / "moving.webp")] and "an animated WebP (2 frames)" in told[0]
    np.testing.assert_array_equal(predict.read_image(str(folder / "alpha.webp")), rgb)
    listed = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert listed[0]["detections"] == listed[1]["detections"]


def test_predict_labels_read_back_through_the_loaders_as_the_same_boxes(trained, tmp_path):
    """Model-assisted labelling: ``--labels voc`` writes each image's detections as LabelImg's
    Pascal VOC XML, ``--labels yolo`` as YOLO lines with classes.txt, ``--labels labelme`` as
    LabelMe's JSON files pointing to the images where they are; read back through load_voc_folder /
    load_yolo / load_labelme as the same boxes (to the pixel; YOLO's six decimals)."""
    from keras_frcnn.data import load_labelme, load_voc_folder, load_yolo
    from test_data_fixtures import examples

    folder = tmp_path / "photos"
    folder.mkdir()
    for number, image in enumerate(trained.images[:3]):
        Image.fromarray(image).save(folder / f"p{number}.png")
    for kind in ("voc", "yolo", "labelme"):
        out = tmp_path / kind
        predict.predict_files(trained.model, [str(folder)], str(out), log=lambda line: None, labels=kind)
        listed = {os.path.basename(e["image"]): e for e in json.loads((out / "detections.json").read_text())}
        assert sum(len(e["detections"]) for e in listed.values()) >= 3
        if kind == "voc":  # a folder as LabelImg keeps it: each XML beside its image
            shutil.copytree(folder, tmp_path / "flat")
            for name in listed:
                shutil.copy(out / "annotations" / f"{name[:-4]}.xml", tmp_path / "flat")
            source = load_voc_folder(tmp_path / "flat", "all", classes=trained.model.class_names)
            first = np.float32([1, 1, 0, 0])  # VOC pixel numbers -> continuous edges
            tolerance = 0.5
        elif kind == "yolo":  # Label Studio's layout: images/, labels/, classes.txt
            shutil.copytree(folder, tmp_path / "set" / "images")
            shutil.copytree(out / "labels", tmp_path / "set" / "labels")
            shutil.copy(out / "classes.txt", tmp_path / "set")
            source = load_yolo(tmp_path / "set", "train")
            first, tolerance = np.float32([0, 0, 0, 0]), 0.01
        else:  # the output folder as it is: the JSON files find the images in photos/, labels.txt the classes
            source = load_labelme(out / "labelme", "all")
            assert source.class_names == trained.model.class_names
            first, tolerance = np.float32([0, 0, 0, 0]), 0.01
        assert source.num_examples == 3 and not source.problems
        for example in examples(source):
            height, width = example["image"].shape[:2]
            expected = listed[os.path.basename(example["image/filename"].decode())]["detections"]
            read = example["objects/bbox"] * np.float32([height, width, height, width]) - first
            np.testing.assert_allclose(read[:, [1, 0, 3, 2]], [d["box"] for d in expected], atol=tolerance,
                                       err_msg=kind)
            assert [trained.model.class_names[label] for label in example["objects/label"]] == [
                d["class"] for d in expected]


def test_predict_refuses_labels_of_class_names_that_would_not_read_back(tmp_path):
    """A model whose class names the label files cannot give back (a name of two lines, which a model
    trained before the data sources refused them may hold; LabelMe's labels.txt markers): refused
    before anything is written or traced. Spaces around a name are dropped by the model itself."""
    from keras_frcnn.data import DataError

    model = build_models(tiny_config(), 3, weights=None, class_names=["a\nb", "_background_", "person "]).model
    assert model.class_names == ("a\nb", "_background_", "person")
    for kind, named in (("yolo", r"\['a\\nb'\]"), ("voc", r"\['a\\nb'\]"),
                        ("labelme", r"\['a\\nb', '_background_'\].*use --labels voc or yolo")):
        with pytest.raises(DataError, match=f"--labels {kind}: the model's class names {named}"):
            predict.predict_files(model, [str(tmp_path)], str(tmp_path / kind), labels=kind)
        assert not (tmp_path / kind).exists()


def test_predict_yolo_and_voc_labels_of_two_images_of_one_name_are_not_mixed_up(trained, tmp_path):
    """YOLO (Ultralytics) and LabelImg find an image's labels by its name without the suffix: x.jpg
    and x.png would share labels/x.txt or annotations/x.xml. The first image's are written under
    that name (not named after its drawing, x_2.png for the second), the second gets none, warned;
    both are in detections.json."""
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray(trained.images[0]).save(folder / "x.jpg", quality=100)
    Image.fromarray(trained.images[1]).save(folder / "x.png")
    for kind, sub, file, tool in (("yolo", "labels", "x.txt", "YOLO"), ("voc", "annotations", "x.xml", "LabelImg")):
        told = []
        predict.predict_files(trained.model, [str(folder)], str(tmp_path / kind), log=lambda line: None,
                              warn=told.append, labels=kind)
        assert sorted(os.listdir(tmp_path / kind / sub)) == [file]
        records = json.loads((tmp_path / kind / "detections.json").read_text())
        assert [os.path.basename(r["image"]) for r in records] == ["x.jpg", "x.png"]
        written = (tmp_path / kind / sub / file).read_text()
        assert (len(written.splitlines()) if kind == "yolo" else written.count("<object>")) == len(
            records[0]["detections"]) and (kind == "yolo" or "<filename>x.jpg</filename>" in written)
        assert told == [f"warning: {folder / 'x.png'}: no {kind.upper()} labels written: {sub}/{file} is another "
                        f"image's of that name ({tool} finds labels by the image's name without its suffix); its "
                        "detections are in detections.json"]


def test_predict_labels_of_a_turned_photo_are_on_it_as_shown_for_yolo_and_labelme(trained, tmp_path):
    """LabelMe shows a phone photo with its EXIF orientation applied and Ultralytics reads YOLO
    labels on it so: ``--labels labelme`` / ``yolo`` write the detections (on the stored pixels)
    turned onto it, with its shown size; read back through load_labelme / load_yolo (which turn
    them onto the stored pixels again) as the same boxes."""
    from keras_frcnn.data import load_labelme, load_yolo
    from test_data_fixtures import examples

    image = Image.fromarray(trained.images[0])
    exif = image.getexif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    (tmp_path / "photos").mkdir()
    image.save(tmp_path / "photos" / "phone.jpg", exif=exif, quality=100)
    for kind in ("labelme", "yolo"):
        out = tmp_path / kind
        predict.predict_files(trained.model, [str(tmp_path / "photos")], str(out), log=lambda line: None,
                              labels=kind)
        (record,) = json.loads((out / "detections.json").read_text())
        assert record["detections"]
        if kind == "labelme":
            written = json.loads((out / "labelme" / "phone.json").read_text())
            assert (written["imageHeight"], written["imageWidth"]) == (record["width"], record["height"])
            source = load_labelme(out / "labelme", "all")
        else:  # Label Studio's layout: images/, labels/, classes.txt
            shutil.copytree(tmp_path / "photos", out / "set" / "images")
            shutil.copytree(out / "labels", out / "set" / "labels")
            shutil.copy(out / "classes.txt", out / "set")
            source = load_yolo(out / "set", "train")
        (example,) = examples(source)
        read = example["objects/bbox"] * np.float32([record["height"], record["width"]] * 2)
        np.testing.assert_allclose(read[:, [1, 0, 3, 2]], [d["box"] for d in record["detections"]], atol=0.01,
                                   err_msg=kind)


def test_predict_on_a_full_disk_names_the_drawing_and_leaves_no_torn_one(trained, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name, image in zip("ab", trained.images):
        Image.fromarray(image).save(folder / f"{name}.jpg")
    save = Image.Image.save

    def filling_the_disk(self, path, *args, **kwargs):  # the second drawing finds the disk full
        if "b.png" in str(path):
            with open(path, "wb") as f:
                f.write(b"\x89PNG half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as Pillow raises it: no file name
        return save(self, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", filling_the_disk)
    out = tmp_path / "out"

    def command():
        predict.predict_files(trained.model, [str(folder)], str(out), log=lambda line: None)
        return 0

    assert cli.run(command) == 2
    assert capsys.readouterr().err == f"error: {out / 'b.png'}: No space left on device (make room on that disk)\n"
    assert sorted(os.listdir(out)) == ["a.png", "detections.json"]  # whole; b.png neither torn nor left partial
    Image.open(out / "a.png").verify()
    assert [os.path.basename(e["drawing"]) for e in json.loads((out / "detections.json").read_text())] == ["a.png"]


def test_runtime_model_interface_matches_the_keras_model(trained):
    """``formats.load_runtime_model`` (what predict uses) gives the Keras model's dict: on the
    ONNX file the tests above exported (an OpenVINO conversion of its own took ~13 s of the suite;
    OpenVINO's runtime runs with -m slow)."""
    model = formats.load_runtime_model(export(trained, "onnx"))
    assert model.class_names == tuple(CLASS_NAMES)
    out = {k: v[0] for k, v in model(trained.images[2][None]).items()}
    reference = trained.reference[2]
    n = int(reference["num_detections"])
    assert int(out["num_detections"]) == n
    np.testing.assert_array_equal(out["labels"], reference["labels"])
    np.testing.assert_allclose(out["boxes"], reference["boxes"], atol=1.0)


def test_a_converter_child_dies_with_its_export(tmp_path):
    """export.py --format onnx killed by kill -9 (or the OOM killer) left tf2onnx converting for
    minutes, ~700 MB, re-parented to init: the converter is a child that dies with its parent."""
    import signal
    import time

    (tmp_path / "sleeper.py").write_text(textwrap.dedent("""
        import os, sys, time
        open(sys.argv[1], "w").write(str(os.getpid()))
        time.sleep(120)
    """))
    pid_file = tmp_path / "child.pid"
    # The parent starts the child as run_tied does (without importing TensorFlow: seconds saved).
    parent = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import os, subprocess, sys
        subprocess.run([sys.executable, "-c", sys.argv[1], str(os.getpid()), "sleeper", sys.argv[2]])
    """), formats._TIED_CHILD, str(pid_file)],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])})
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and parent.poll() is None, "the child never started"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{child}") and "zombie" not in open(f"/proc/{child}/status").read().lower():
        assert time.monotonic() < deadline, "the child outlived its parent"
        time.sleep(0.1)


def test_export_format_errors(trained, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:  # (before the model is loaded)
        export_script().main(["--model", str(trained.root / "model.keras"), "--format", "onnx",
                              "--out", str(tmp_path / "m"), "--version", "2"])
    assert stop.value.code == 2 and "--version: for --format saved_model only" in capsys.readouterr().err
    with pytest.raises(FileExistsError):
        formats.export_runtime_model(trained.model, export(trained, "onnx"))
    with pytest.raises(ValueError, match=r"\.xml"):
        formats.export_runtime_model(trained.model, tmp_path / "m.onnx", "openvino")
    with pytest.raises(ValueError, match="not an exported model"):
        formats.load_runtime_model(tmp_path / "model.pt")
    # A corrupt artifact: predict names it and fails cleanly.
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    Image.fromarray(trained.images[0]).save(tmp_path / "image.png")
    result = subprocess.run([sys.executable, "-m", "keras_frcnn.predict", "--model", str(tmp_path / "broken.onnx"),
                             str(tmp_path / "image.png"), "--out", str(tmp_path / "drawn")], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "broken.onnx: cannot be opened" in result.stderr
    assert "Traceback" not in result.stderr
    # A runtime that is not installed: the error says which extra brings it.
    code = ("import sys; sys.modules['onnxruntime'] = None\n"
            "from keras_frcnn.formats import load_runtime_model\n"
            f"load_runtime_model({str(tmp_path / 'broken.onnx')!r})")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "pip install 'keras-frcnn[onnx]'" in result.stderr


def test_a_failed_export_leaves_nothing_behind(trained, tmp_path, monkeypatch):
    """A conversion that fails part-way (a full disk, a kill) leaves no torn model where a runtime
    would load it, nor a file that would refuse the next export."""
    def full_disk(saved, path, names, work):
        with open(path, "wb") as f:
            f.write(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(formats, "_to_litert", full_disk)
    (tmp_path / "out").mkdir()
    with pytest.raises(OSError):
        formats.export_runtime_model(trained.model, tmp_path / "out" / "m.tflite")
    assert os.listdir(tmp_path / "out") == []


def test_an_export_killed_with_9_leaves_a_folder_the_next_one_removes(tmp_path):
    """kill -9 skips every cleanup: the staging folder (up to a model's size) stays. The next
    export into that folder removes it; one of a process still running is left alone."""
    import socket

    from keras_frcnn.files import staging_folder

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    killed = tmp_path / f".1.partial-{host}-{dead.pid}-k1ll3d"
    running = tmp_path / f".2.partial-{host}-{os.getpid()}-runn1ng"
    other_host = tmp_path / f".1.partial-elsewhere-{dead.pid}-x"  # shared disk: not ours to judge
    for folder in (killed, running, other_host, tmp_path / ".cache"):
        folder.mkdir()
        (folder / "saved_model.pb").write_bytes(b"half")
    with staging_folder(tmp_path, "3") as staging:
        assert os.path.basename(staging).startswith(f".3.partial-{host}-{os.getpid()}-")
        assert not killed.exists() and running.exists() and other_host.exists() and (tmp_path / ".cache").exists()
    assert sorted(os.listdir(tmp_path)) == sorted([running.name, other_host.name, ".cache"])


def test_the_branch_free_trace_computes_the_same_detections(trained):
    """What the converters get (no tf.cond shortcuts, float32 input) equals the model exactly,
    on a padded batch of two sizes and on one image at its own size."""
    layers = trained.model.layers_
    a, b = trained.images[0], trained.images[2]
    batch = np.zeros((2, 144, 128, 3), np.uint8)
    batch[0, :128, :128], batch[1, :144, :120] = a, b
    sizes = np.array([[128, 128], [144, 120]], np.int32)

    def run(images, image_sizes, branchless):
        function = tf.function(lambda x, s: forward(layers, x, s), autograph=False)
        if branchless:
            with for_converters():
                concrete = function.get_concrete_function(tf.TensorSpec([None, None, None, 3], tf.float32),
                                                          tf.TensorSpec([None, 2], tf.int32))
            graph_ops = {op.type for op in concrete.graph.get_operations()}
            assert not graph_ops & {"If", "StatelessIf"}
            return {k: v.numpy() for k, v in concrete(tf.cast(images, tf.float32), image_sizes).items()}
        return {k: v.numpy() for k, v in function(tf.constant(images), image_sizes).items()}

    for images, image_sizes in ((batch, sizes), (a[None], np.array([[128, 128]], np.int32))):
        plain, branchless = run(images, image_sizes, False), run(images, image_sizes, True)
        for k in plain:
            np.testing.assert_array_equal(branchless[k], plain[k], err_msg=k)
