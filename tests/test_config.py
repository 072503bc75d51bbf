import dataclasses
import json
import re

import pytest

from keras_frcnn.config import Config, ConfigError, preset, PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_json(name):
    cfg = preset(name)
    assert Config.from_json(cfg.to_json()) == cfg


def test_voc_preset_trains_and_tests_with_the_papers_settings():
    """REFERENCE.md's training and test settings, read off what the voc preset builds and runs:
    the schedule's stages, each stage's optimizer, the samplers of the training views, the
    proposal, RoI pooling and detection layers of the network."""
    import keras

    from keras_frcnn.models import build_models
    from keras_frcnn.optimizer import CaffeSGD
    from keras_frcnn.training import make_optimizer, stages

    cfg = preset("voc")
    assert cfg.backbone == "vgg16" and cfg.weights == "imagenet"
    plan = stages(cfg)
    # stage: trains, iterations (lr step), images per batch.
    assert [(s.name, s.train_base, s.train_rpn_head, s.train_detector_head, s.steps, s.lr_drop_step,
             s.batch_images, s.reset_base, s.reset_rpn_head) for s in plan] == [
        ("stage1_rpn", True, True, False, 80000, 60000, 1, False, False),
        ("stage2_detector", True, False, True, 40000, 30000, 2, True, False),
        ("stage3_rpn", False, True, False, 80000, 60000, 1, False, True),
        ("stage4_detector", False, False, True, 40000, 30000, 2, False, False)]
    for stage in plan:
        optimizer = make_optimizer(cfg, stage)
        assert isinstance(optimizer, CaffeSGD)
        rates = []
        for step in (0, stage.lr_drop_step - 1, stage.lr_drop_step + 1):
            optimizer.iterations.assign(step)
            rates.append(float(optimizer.learning_rate))
        assert rates == pytest.approx([1e-3, 1e-3, 1e-4])
        assert (optimizer.momentum, optimizer.l2, optimizer.bias_lr_multiplier, optimizer.decoupled) == \
            (0.9, 5e-4, 2.0, False)

    keras.utils.set_random_seed(0)
    net = build_models(cfg, 20, weights=None)
    anchors = net.rpn_model.anchor_targets
    assert (anchors.positive_iou, anchors.negative_iou, anchors.batch_size, anchors.positive_fraction,
            anchors.allowed_border) == (0.7, 0.3, 256, 0.5, 0.0)
    # 128 RoIs a step (py-faster-rcnn's TRAIN.BATCH_SIZE): 64 per image in the 2-image detector
    # stages, 128 for the 1-image joint net; 25 % foreground at IoU >= 0.5, background [0, 0.5).
    for view, per_image in ((net.detector_model, 64), (net.joint_model, 128)):
        rois = view.proposal_targets
        assert (rois.batch_rois, rois.fg_fraction, rois.fg_iou, rois.bg_iou, rois.box_stds) == \
            (per_image, 0.25, 0.5, (0.0, 0.5), (0.1, 0.1, 0.2, 0.2))
    assert (cfg.rpn.sigma, cfg.detector.sigma) == (3.0, 1.0)  # the losses' smooth L1
    layers = net.model.layers_
    assert (layers.preprocess.min_side, layers.preprocess.max_side) == (600, 1000)
    assert (layers.anchors.stride, layers.anchors.scales, layers.anchors.ratios) == (16, (8.0, 16.0, 32.0),
                                                                                    (0.5, 1.0, 2.0))
    proposals = layers.proposals
    assert (proposals.pre_nms_top_n, proposals.post_nms_top_n, proposals.nms_iou, proposals.min_size) == \
        ((12000, 6000), (2000, 300), 0.7, 16.0)
    pooling = layers.roi_pooling
    assert (pooling.pool_size, pooling.spatial_scale, pooling.mode) == (7, 1 / 16, "max")
    detections = layers.detections
    assert (detections.score_threshold, detections.nms_iou, detections.max_detections) == (0.05, 0.3, 100)
    assert layers.detector_head.fc_units == 4096 and layers.detector_head.dropout_rate == 0.5


def test_zf_voc_needs_zf_weights():
    from keras_frcnn.models import build_models

    cfg = preset("zf-voc")
    assert (cfg.detector.pool_size, cfg.rpn.channels, cfg.weights) == (6, 256, "imagenet")
    with pytest.raises(ConfigError, match="--weights PATH"):
        build_models(cfg, 20)


def test_validation_names_the_field():
    with pytest.raises(ConfigError, match="rpn.nms_iou"):
        dataclasses.replace(preset("voc"), rpn=dataclasses.replace(preset("voc").rpn, nms_iou=1.5))
    with pytest.raises(ConfigError, match="backbone"):
        Config(backbone="resnet")
    with pytest.raises(ConfigError, match="detector.pool_mode"):
        Config(detector=dataclasses.replace(Config().detector, pool_mode="avg"))
    # A schedule of no steps (it saved an untrained model as a trained one); the other schedule's
    # steps may be 0.
    with pytest.raises(ConfigError, match="train.joint_steps"):
        Config.from_dict({"train": {"schedule": "joint", "joint_steps": 0}})
    with pytest.raises(ConfigError, match="train.stage_steps"):
        Config.from_dict({"train": {"schedule": "alternating", "stage_steps": [0, 0, 0, 0]}})
    Config.from_dict({"train": {"schedule": "alternating", "joint_steps": 0}})
    Config.from_dict({"train": {"schedule": "joint", "stage_steps": [0, 0, 0, 0]}})
    with pytest.raises(ConfigError, match="train.image_pad_multiple must be an int >= 1, got 0"):
        Config.from_dict({"train": {"image_pad_multiple": 0}})
    with pytest.raises(ConfigError, match="train.aspect_group must be an int >= 0, got -1"):
        Config.from_dict({"train": {"aspect_group": -1}})


def test_from_json_rejects_unknown_and_malformed():
    with pytest.raises(ConfigError, match="rpn.nms_threshold"):
        Config.from_dict({"rpn": {"nms_threshold": 0.7}})
    with pytest.raises(ConfigError, match="malformed"):
        Config.from_json("{not json")
    with pytest.raises(ConfigError, match="image.min_side"):
        Config.from_dict({"image": {"min_side": -3}})


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("coco-huge")


def test_precision_auto_follows_the_hardware(monkeypatch, tmp_path):
    """auto: bfloat16 where the CPU has native bfloat16, float32 elsewhere and with a GPU; the
    model stores the resolved policy."""
    import tensorflow as tf

    from keras_frcnn import config as C
    from keras_frcnn.models import FasterRCNN

    assert preset("shapes").precision == "auto" and preset("voc").precision == "auto"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 avx512_vnni\n")
    real_open = open
    monkeypatch.setattr("builtins.open", lambda path, *a, **k: real_open(cpuinfo if path == "/proc/cpuinfo" else path, *a, **k))
    assert C.resolve_precision("auto") == ("mixed_bfloat16", "auto: the CPU has AVX512_BF16")
    assert C.resolve_precision("float32")[0] == "float32"
    model = FasterRCNN(dataclasses.replace(preset("shapes"), backbone_width=0.25), 2)
    assert model.frcnn_config.precision == "mixed_bfloat16"
    cpuinfo.write_text("flags : fpu sse amx_tile amx_bf16 amx_int8\n")
    assert C.resolve_precision("auto")[0] == "mixed_bfloat16"
    cpuinfo.write_text("flags : fpu sse avx2 fma\n")
    assert C.resolve_precision("auto") == ("float32", "auto: no native bfloat16 on this CPU")
    cpuinfo.write_text("flags : avx512_bf16\n")
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else [])
    assert C.resolve_precision("auto")[0] == "float32"


def test_a_config_files_error_names_the_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"backbone": "zf", "train": {"steps"')  # torn, or edited by hand
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: config JSON is malformed"):
        Config.from_file(path)
    path.write_text('{"backbone": "zf", "trian": {}}')
    with pytest.raises(ConfigError, match=f"^{re.escape(str(path))}: unknown config field trian"):
        Config.from_file(path)
    path.write_text(Config().to_json())
    assert Config.from_file(path) == Config()


@pytest.mark.parametrize("section, name, value, message", [
    ("rpn", "min_size", "16", "rpn.min_size must be an int, got '16'"),
    ("detector", "max_detections", 50.5, "detector.max_detections must be an int, got 50.5"),
    ("image", "flip", "false", "image.flip must be true or false, got 'false'"),  # (a truthy string)
    ("image", "min_side", True, "image.min_side must be an int, got True"),
    ("anchors", "ratios", "0.5,1,2", r"anchors.ratios must be a list \(a tuple in Python\), got '0.5,1,2'"),
    ("image", "pixel_means", ["a", "b", "c"], r"image.pixel_means must be a list of numbers, got \('a'"),
    ("rpn", "pre_nms_top_n", [1.5, 2], r"rpn.pre_nms_top_n must be a list of ints, got \(1.5, 2\)"),
    ("train", "lr_drop", None, "train.lr_drop must be a number, got None"),
    (None, "weights", 3, "weights must be a string or null, got 3"),
])
def test_a_config_value_of_the_wrong_type_is_named(section, name, value, message):
    """Each field's declared type (a tuple's items of its default's kind) checked before its range:
    before, "16" for an int failed later with a TypeError naming nothing, "false" trained as true."""
    data = json.loads(Config().to_json())
    (data[section] if section else data)[name] = value
    with pytest.raises(ConfigError, match=f"^config field {message}"):
        Config.from_dict(data)
    ints_for_numbers = json.loads(Config().to_json())
    ints_for_numbers["anchors"]["scales"], ints_for_numbers["train"]["lr"] = [8, 16, 32], 1
    assert Config.from_dict(ints_for_numbers).anchors.scales == (8, 16, 32)
    # Python's lists for tuples, and a whole float for an int, are taken as the tuple and the int.
    image = Config(image=dataclasses.replace(Config().image, train_min_sides=[600], min_side=600.0)).image
    assert image.train_min_sides == (600,) and image.min_side == 600 and type(image.min_side) is int


def test_numbers_past_any_use_files_not_utf8_and_unknown_initializers_are_named(tmp_path):
    """What a config fuzzing run (1,169 mutated files) found passing the checks and failing later
    (a traceback far from the field, or a training step loop of 2**70 iterations that never ends),
    or passing silently (Infinity / NaN, JSON's tokens, as a weight decay or the pixel means)."""
    text = json.loads(preset("shapes").to_json())

    def refused(section, name, value):
        data = json.loads(json.dumps(text))
        (data[section] if section else data)[name] = value
        with pytest.raises(ConfigError) as error:
            Config.from_json(json.dumps(data))
        return str(error.value)

    for section, name, value in (("train", "steps_per_execution", 2 ** 70), ("detector", "fc_units", 2 ** 40),
                                 ("train", "lr", 2.0 ** 70), ("", "backbone_width", 2 ** 70),
                                 ("image", "pixel_means", [float("nan")] * 3),
                                 ("train", "weight_decay", float("inf")), ("anchors", "ratios", [0.5, float("inf")])):
        message = refused(section, name, value)
        assert message.startswith(f"config field {section + '.' if section else ''}{name} must be finite, within "
                                  "±2,147,483,647"), message
    assert "train_min_sides must be empty or a tuple of positive ints" in refused("image", "train_min_sides", [True])
    assert "base_initializer must be the name of a Keras initializer" in refused("", "base_initializer", "bogus")
    seeded = json.loads(json.dumps(text))
    seeded["train"]["seed"] = 3_000_000_000  # (a seed's own range: an unsigned 32-bit one)
    assert Config.from_json(json.dumps(seeded)).train.seed == 3_000_000_000
    for content, message in ((b'{"name": "caf\xe9"}', "not UTF-8 text, as JSON is"),
                             (b'{"name": ' + b"1" * 5000 + b"}", "malformed: Exceeds the limit"),
                             (b"[" * 100_000, "malformed: nested too deeply")):
        (tmp_path / "c.json").write_bytes(content)
        with pytest.raises(ConfigError, match=rf"c\.json: .*{message}"):
            Config.from_file(tmp_path / "c.json")
    (tmp_path / "c.json").write_bytes(b"\xef\xbb\xbf" + preset("shapes").to_json().encode())  # a byte order mark
    assert Config.from_file(tmp_path / "c.json") == preset("shapes")
