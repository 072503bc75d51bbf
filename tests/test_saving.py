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
