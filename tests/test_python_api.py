"""README's "Training from Python" block, run as written there (its data swapped for a small CSV
set, its preset for the tests' tiny one, two steps a stage): the documented API trains, saves a
model that loads back, and evaluates."""

import re
from pathlib import Path

import keras
import numpy as np
from test_data_fixtures import write_image

from conftest import tiny_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_s_training_from_python_block_runs(tmp_path, monkeypatch):
    section = README.read_text().split("## Training from Python", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    rng = np.random.default_rng(0)
    rows = []
    for n in range(10):
        write_image(tmp_path / "images" / f"im{n}.jpg", 96, 128, seed=n)
        x, y = rng.uniform(0, 80, 2)
        rows.append(f"images/im{n}.jpg,{x:.0f},{y:.0f},{x + 40:.0f},{y + 40:.0f},{('a', 'b')[n % 2]}\n")
    (tmp_path / "annotations.csv").write_text("".join(rows))
    (tmp_path / "tiny.json").write_text(tiny_config().to_json())
    for documented, tested in (('keras_frcnn.preset("shapes")', 'keras_frcnn.Config.from_file("tiny.json")'),
                               ('"runs/mine",', '"runs/mine", steps=2, verbose=0,')):
        assert documented in code, documented
        code = code.replace(documented, tested)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, str(README), "exec"), namespace)
    assert namespace["runner"].completed == ["stage1_rpn", "stage2_detector", "stage3_rpn", "stage4_detector"]
    assert namespace["summary"]["num_images"] == 1 and 0 <= namespace["summary"]["mAP"] <= 1
    loaded = keras.models.load_model(tmp_path / "runs" / "mine" / "model.keras")
    assert loaded.class_names == ("a", "b")
