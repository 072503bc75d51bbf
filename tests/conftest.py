import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# pytest-xdist runs one worker per core, and each worker's TensorFlow would start a thread per core
# for every op (and so would each train.py the tests start): 2 workers x 2 threads on 2 cores
# fought for them. One op thread per worker: the default suite 507 s -> 416 s on the same machine
# within 20 minutes (2026-12-02). Not for a run of one worker (-n 0), which keeps every core.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
# The image-check cache of the tests' own files (and of train.py runs they start): not the user's.
os.environ["KERAS_FRCNN_CACHE"] = tempfile.mkdtemp(prefix="keras_frcnn_cache_")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The tests write ~1 GB (checkpoints, SavedModels, weights files, TFDS builds), and this project's
# machines' disk is shared: while something else wrote to it, test_checkpoints + test_export took
# 269 s with their files on the disk (85 s of it waiting on the disk), 158 s in memory right
# after. They go to a folder in /dev/shm (memory) where it has room, removed at the end;
# --basetemp chooses another.
RAM_FOLDER, RAM_NEEDED = "/dev/shm", 4 << 30
_ram_basetemp = None


@pytest.hookimpl(tryfirst=True)  # (before pytest's own temporary-folder factory reads the option)
def pytest_configure(config):
    global _ram_basetemp
    if config.option.basetemp is not None or os.environ.get("PYTEST_XDIST_WORKER"):
        return  # (given, or a worker: pytest-xdist gives each one a folder in the session's)
    try:
        room = os.statvfs(RAM_FOLDER)
        if room.f_bavail * room.f_frsize < RAM_NEEDED or not os.access(RAM_FOLDER, os.W_OK):
            return
    except OSError:  # no such folder (macOS, Windows): the default
        return
    _ram_basetemp = config.option.basetemp = tempfile.mkdtemp(prefix="keras_frcnn_tests_", dir=RAM_FOLDER)


def pytest_unconfigure(config):
    if _ram_basetemp:
        import shutil

        shutil.rmtree(_ram_basetemp, ignore_errors=True)


# Seconds each file takes (--durations=0 summed per file, 2 cores, one op thread a worker,
# 2026-12-06 03:35, Intel Xeon with AMX). pytest-xdist hands whole files to its two workers in
# collection order (--no-loadscope-reorder: not by test count), so the longest go first and the
# short ones fill the end: the workers finish together (~30 s less than by test count). A stale
# figure costs time, never a test; a file missing here goes last, so list every file over ~10 s.
FILE_SECONDS = {"test_training": 175, "test_checkpoints": 147, "test_export": 136, "test_formats": 84,
                "test_cli": 57, "test_resnet": 55, "test_models": 38, "test_data_csv": 36, "test_stream": 24,
                "test_data_pipeline": 22, "test_python_api": 20, "test_backbone": 16, "test_roi_pooling": 16,
                "test_jit": 14, "test_data_shapes": 14, "test_data_combined": 14, "test_data_tfrecord": 13,
                "test_saving": 10}


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: -FILE_SECONDS.get(item.path.stem, 0))  # stable: in-file order kept


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_boxes(rng, n, size=200.0, min_side=1.0):
    """``[n, 4]`` yxyx float32 boxes with sides >= min_side inside [0, size]."""
    y0 = rng.uniform(0, size - min_side, n)
    x0 = rng.uniform(0, size - min_side, n)
    y1 = y0 + rng.uniform(min_side, size - y0 + 1e-3)
    x1 = x0 + rng.uniform(min_side, size - x0 + 1e-3)
    return np.stack([y0, x0, np.minimum(y1, size), np.minimum(x1, size)], 1).astype(np.float32)


def tiny_config(**overrides):
    """A config small enough to train in seconds on a CPU (ZF at quarter width, 128 px)."""
    import dataclasses

    from keras_frcnn import config as C

    s = C.preset("shapes")
    cfg = dataclasses.replace(
        # Plain Glorot init without batch norm: 150 steps are too few for batch-norm statistics.
        # float32 whatever the CPU ("auto" would be bfloat16 where the CPU has it): tests compare
        # numbers across machines; mixed precision has tests of its own.
        s, name="tiny", precision="float32", backbone_width=0.25, base_initializer="glorot_uniform",
        base_batch_norm=False,
        image=C.ImageConfig(min_side=128, max_side=160, flip=False),
        anchors=C.AnchorConfig(scales=(1.5, 3.0)),
        rpn=dataclasses.replace(s.rpn, channels=32, pre_nms_top_n=(300, 300), post_nms_top_n=(50, 50),
                                batch_size=64),
        # The paper's RoI max pooling (XLA-compatible; the shapes preset's RoIAlign is tested on
        # its own and through the other bases' tiny configs).
        detector=dataclasses.replace(s.detector, pool_mode="max", fc_units=64, dropout=0.0, batch_rois=64),
    )
    return dataclasses.replace(cfg, **overrides)


def tiny_resnet_config(**overrides):
    """``tiny_config`` with a ResNet-50 C4 base at 1/16 width (conv4: 64 channels) and one
    bottleneck per stage (the design, a quarter of the depth: the suite's time), from random
    weights, RoIAlign 14 x 14 into the conv5 head."""
    import dataclasses

    from keras_frcnn import config as C

    cfg = tiny_config()
    cfg = dataclasses.replace(
        cfg, name="tiny-resnet", backbone="resnet50", backbone_width=1 / 16, backbone_blocks=(1, 1, 1, 1),
        base_initializer="he_normal",
        anchors=C.AnchorConfig(scales=(1.5, 3.0)),
        detector=dataclasses.replace(cfg.detector, pool_size=14, pool_mode="align", batch_rois=64))
    return dataclasses.replace(cfg, **overrides)


def tiny_fpn_config(**overrides):
    """``tiny_config`` with a ResNet-50-FPN base at 1/16 width (P2..P6 of 16 channels) and one
    bottleneck per stage, from random weights: one anchor size per level (8 x its stride),
    RoIAlign 7 x 7 per level."""
    import dataclasses

    from keras_frcnn import config as C

    cfg = tiny_config()
    cfg = dataclasses.replace(
        cfg, name="tiny-fpn", backbone="resnet50-fpn", backbone_width=1 / 16, backbone_blocks=(1, 1, 1, 1),
        base_initializer="he_normal",
        anchors=C.AnchorConfig(stride=4, base_size=4, scales=(8.0,)),
        rpn=dataclasses.replace(cfg.rpn, channels=16),
        detector=dataclasses.replace(cfg.detector, pool_size=7, pool_mode="align", batch_rois=64))
    return dataclasses.replace(cfg, **overrides)


def tiny_mobilenet_config(**overrides):
    """``tiny_config`` with a MobileNetV3-Large-FPN base at width 0.25 (its pyramid of 16
    channels: two stride-32 levels and the pooled stride-64 one), from random weights: anchors of
    32 and 64 px on every level, RoIAlign 7 x 7 on the first level."""
    import dataclasses

    from keras_frcnn import config as C

    cfg = tiny_config()
    cfg = dataclasses.replace(
        cfg, name="tiny-mobilenet", backbone="mobilenetv3-fpn", backbone_width=0.25, base_batch_norm=False,
        base_initializer="he_normal",
        image=dataclasses.replace(cfg.image, **C.MOBILENET_IMAGE),
        anchors=C.AnchorConfig(stride=32, base_size=32, scales=(1.0,), sizes=(32.0, 64.0)),
        rpn=dataclasses.replace(cfg.rpn, channels=16, score_threshold=0.05),
        detector=dataclasses.replace(cfg.detector, pool_size=7, pool_mode="align", batch_rois=64))
    return dataclasses.replace(cfg, **overrides)


def synthetic_batch(n=4, size=128, seed=0):
    """``n`` noisy ``size`` px images with a red square (class 1) and a blue wide box (class 2),
    as a training batch dict (boxes in pixels, no resizing needed at min_side == size)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(90, 140, (n, size, size, 3)).astype(np.uint8)
    gt_boxes = np.zeros((n, 2, 4), np.float32)
    gt_classes = np.zeros((n, 2), np.int32)
    for i in range(n):
        for slot, (cls, colour) in enumerate([(1, (230, 40, 40)), (2, (40, 40, 230))]):
            h = int(rng.integers(28, 44))
            w = h if cls == 1 else int(h * 1.6)
            # The square lives in the top half, the wide box in the bottom half: no overlap.
            y = int(rng.integers(0, size // 2 - h)) + (size // 2 if slot else 0)
            x = int(rng.integers(0, size - w))
            images[i, y:y + h, x:x + w] = colour
            gt_boxes[i, slot] = [y, x, y + h, x + w]
            gt_classes[i, slot] = cls
    return {
        "images": images,
        "image_info": np.tile([[size, size, 1.0]], (n, 1)).astype(np.float32),
        "gt_boxes": gt_boxes,
        "gt_classes": gt_classes,
        "num_gt": np.full((n,), 2, np.int32),
    }


@pytest.fixture(scope="session")
def tiny_trained(tmp_path_factory):
    """One tiny two-class model ("square", "wide") trained 200 joint steps on ``synthetic_batch``,
    saved as ``root / "model.keras"``, shared by the export tests (training it takes ~10 s, ~20 s
    beside another worker: the first pytest-xdist worker to need it trains it, under a lock in
    the session's common temporary folder, and the other loads the file; the tests copy it)."""
    import fcntl
    import types

    import keras
    import tensorflow as tf

    from keras_frcnn.models import build_models

    common = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        common = common.parent  # (each worker's base folder is in the session's)
    root = common / "tiny_trained"
    root.mkdir(exist_ok=True)
    with open(common / "tiny_trained.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # (released when the file closes)
        if (root / "model.keras").exists():
            return types.SimpleNamespace(root=root, model=keras.models.load_model(root / "model.keras"))
        keras.utils.set_random_seed(0)
        net = build_models(tiny_config(), 2, weights=None, class_names=["square", "wide"])
        joint = net.prepare("joint", keras.optimizers.SGD(0.01, momentum=0.9))
        joint.fit(tf.data.Dataset.from_tensors(synthetic_batch(4)).repeat(200), verbose=0)
        net.model.save(root / "model.keras")
        return types.SimpleNamespace(root=root, model=net.model)
