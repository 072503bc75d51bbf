import dataclasses

import pytest

from keras_frcnn.config import Config, ConfigError, preset, PRESETS


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid_and_round_trip_json(name):
    cfg = preset(name)
    assert Config.from_json(cfg.to_json()) == cfg


def test_voc_preset_has_the_paper_settings():
    cfg = preset("voc")
    assert cfg.backbone == "vgg16" and cfg.weights == "imagenet"
    assert (cfg.image.min_side, cfg.image.max_side) == (600, 1000)
    assert cfg.anchors.scales == (8.0, 16.0, 32.0) and cfg.anchors.ratios == (0.5, 1.0, 2.0)
    assert cfg.rpn.pre_nms_top_n == (12000, 6000) and cfg.rpn.post_nms_top_n == (2000, 300)
    assert cfg.rpn.nms_iou == 0.7 and cfg.detector.nms_iou == 0.3
    assert cfg.detector.box_stds == (0.1, 0.1, 0.2, 0.2)
    assert cfg.train.stage_steps == (80000, 40000, 80000, 40000)
    assert preset("zf-voc").detector.pool_size == 6 and preset("zf-voc").rpn.channels == 256


def test_validation_names_the_field():
    with pytest.raises(ConfigError, match="rpn.nms_iou"):
        dataclasses.replace(preset("voc"), rpn=dataclasses.replace(preset("voc").rpn, nms_iou=1.5))
    with pytest.raises(ConfigError, match="backbone"):
        Config(backbone="resnet")
    with pytest.raises(ConfigError, match="detector.pool_mode"):
        Config(detector=dataclasses.replace(Config().detector, pool_mode="avg"))


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
