import json
import subprocess
import sys
import textwrap
import zipfile

import h5py
import keras
import numpy as np

from keras_frcnn.models import build_models
from conftest import tiny_config

CHILD = textwrap.dedent("""
    import sys, numpy as np, keras
    import keras_frcnn  # registers the layers, as `import keras_hub` does for KerasHub models
    path, image_path, out_path = sys.argv[1:4]
    model = keras.models.load_model(path)  # default safe_mode=True
    assert isinstance(model, keras_frcnn.FasterRCNN)
    out = model(np.load(image_path))
    base = {id(v) for v in model.base.weights}
    views = model.networks()
    assert base <= {id(v) for v in views.rpn_model.weights}
    assert base <= {id(v) for v in views.detector_model.weights}
    np.savez(out_path, class_names=np.array(model.class_names), **{k: v.numpy() for k, v in out.items()})
""")


def test_keras_file_round_trip_in_a_fresh_process(tmp_path):
    keras.utils.set_random_seed(0)
    net = build_models(tiny_config(), 2, weights=None, class_names=["square", "wide"])
    image = np.random.default_rng(0).integers(0, 256, (1, 100, 120, 3)).astype(np.uint8)
    expected = net.model(image)
    path = tmp_path / "model.keras"
    net.model.save(path)
    np.save(tmp_path / "image.npy", image)

    # The whole network is stored once: as many weight arrays as the model has variables.
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f, h5py.File(f) as h5:
        arrays = []
        h5.visititems(lambda name, obj: arrays.append(name) if isinstance(obj, h5py.Dataset) else None)
        config = json.loads(archive.read("config.json"))
    assert len(arrays) == len(net.model.weights)
    assert config["registered_name"] == "keras_frcnn>FasterRCNN"

    subprocess.run([sys.executable, "-c", CHILD, str(path), str(tmp_path / "image.npy"),
                    str(tmp_path / "out.npz")], check=True, timeout=300)
    got = np.load(tmp_path / "out.npz")
    assert list(got["class_names"]) == ["square", "wide"]
    for key in ("boxes", "confidence", "labels", "num_detections"):
        np.testing.assert_array_equal(got[key], expected[key].numpy())


def test_a_trained_model_is_the_starting_point_of_another_run(tmp_path, caplog):
    """``--weights model.keras`` (fine-tuning a detector on other data): every weight of the same
    path and shape is copied; the class layers of other classes start anew, named in a warning;
    another base, or a file that is not a model, is a ConfigError naming it."""
    import logging

    import pytest

    from conftest import tiny_resnet_config
    from keras_frcnn.config import ConfigError

    keras.utils.set_random_seed(0)
    source = build_models(tiny_config(), 2, weights=None, class_names=["a", "b"])
    path = str(tmp_path / "model.keras")
    source.model.save(path)
    keras.utils.set_random_seed(1)  # another initialisation: every copied weight is seen
    same = build_models(tiny_config(), 2, weights=path, class_names=["a", "b"])
    for mine, theirs in zip(same.model.weights, source.model.weights, strict=True):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)
    # Other classes: "b" first, then a class the model does not know. Class layers are copied
    # class by class by name (background, column 0, too); the new class keeps its initialisation.
    with caplog.at_level(logging.WARNING, logger="keras_frcnn"):
        other = build_models(tiny_config(), 2, weights=path, class_names=["b", "new"])
    assert "classes it does not know start anew in the class score and box layers: new" in caplog.text
    theirs = {v.path: v.numpy() for v in source.model.weights}
    for mine in other.model.weights:
        value, layer = mine.numpy(), mine.path.split("/")[-2]
        if layer not in ("cls_score", "bbox_pred"):
            np.testing.assert_array_equal(value, theirs[mine.path], err_msg=mine.path)
            continue
        width = 1 if layer == "cls_score" else 4
        given = theirs[mine.path]
        np.testing.assert_array_equal(value[..., :width], given[..., :width])  # background
        np.testing.assert_array_equal(value[..., width:2 * width], given[..., 2 * width:3 * width])  # "b"
        if mine.path.endswith("kernel"):  # "new" keeps its random initialisation (biases start at 0)
            assert not np.array_equal(value[..., 2 * width:], given[..., width:2 * width])
    # A set of other classes (120 of them): said in one line, not 120 names.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="keras_frcnn"):
        build_models(tiny_config(), 120, weights=path, class_names=[f"c{i}" for i in range(120)])
        build_models(tiny_config(), 31, weights=path, class_names=["a", *(f"c{i}" for i in range(30))])
    assert "none of its classes is one of this run's 120: the class score and box layers start anew" in caplog.text
    assert "box layers: c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17, c18, c19 " \
           "and 10 more" in caplog.text
    more = build_models(tiny_config(), 3, weights=path, class_names=["c", "a", "b"])  # another count
    score = {v.path.split("/")[-2] + "/" + v.path.split("/")[-1]: v.numpy() for v in more.model.weights}
    given = theirs[next(p for p in theirs if p.endswith("cls_score/kernel"))]
    np.testing.assert_array_equal(score["cls_score/kernel"][:, [0, 2, 3]], given)  # background, "a", "b"
    with pytest.raises(ConfigError, match=r"model\.keras: its base \(zf\) has none of this run's base's weights"):
        build_models(tiny_resnet_config(), 2, weights=path, class_names=["a", "b"])
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"junk\.keras: not a keras_frcnn \.keras model"):
        build_models(tiny_config(), 2, weights=str(tmp_path / "junk.keras"), class_names=["a", "b"])


def test_a_model_saved_with_spaces_around_a_class_name_loads_without_them(tmp_path):
    """The data sources take class names without the spaces around them; a model saved before,
    holding "person ", loads as "person" so that its data, checkpoints and label files match it."""
    path = tmp_path / "model.keras"
    build_models(tiny_config(), 2, weights=None, class_names=["person", "car"]).model.save(path)
    with zipfile.ZipFile(path) as z:
        files = {name: z.read(name) for name in z.namelist()}
    config = files["config.json"].decode()
    assert config.count('"person"') == 1
    files["config.json"] = config.replace('"person"', '"person "').encode()
    with zipfile.ZipFile(path, "w") as z:
        for name, content in files.items():
            z.writestr(name, content)
    assert keras.models.load_model(path).class_names == ("person", "car")
