"""The built-in synthetic ``shapes`` set: a TFDS builder generated locally, with no network.

About 256 px images (each side 224-288 px) on textured, noisy backgrounds, holding 0-6 objects of
four classes of distinct shapes (``SHAPE_CLASSES``: circle, square, triangle, cross) in varied
colours, sizes (24-128 px), rotations, overlapping a little, some cut by the image border. It is
the data of the default ``python train.py``: small enough that the whole 4-step schedule runs on
a CPU in minutes, hard enough that a detector has to find objects rather than colours.

Everything is drawn with numpy from a seeded generator (one per example, from ``(seed, split,
index)``), so two builds give identical bytes. Shapes are rendered with 4 x 4 supersampling for
anti-aliased edges. Every box is the extent of the object's visible part, as VOC and COCO annotate
(not the extent of a shape a later one hides an end of, or of its part past the border), in
continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``): the exact extent of its geometry
inside the image on each side no later object covers; on a side one does, the edge of its
outermost visible supersample (1/4 px).

    source = load_shapes("train", data_dir="/tmp/tfds")          # builds once (seconds), then loads
    source = load_shapes("test", num_train=8, num_test=4)        # a tiny version for tests

Features are the TFDS detection layout (``image``, ``image/filename``, ``image/id``,
``objects/{bbox, label, is_difficult}``); ``is_difficult`` is always False.
"""

from __future__ import annotations

import functools
import io
import math

from absl import logging as absl_logging
import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

from keras_frcnn.data.examples import DetectionSource, from_tfds_example
from keras_frcnn.data.tfds_sources import expanded, prepared, read_split, split_examples

SHAPE_CLASSES = ("circle", "square", "triangle", "cross")

_SPLIT_IDS = {"train": 1, "test": 2}
_SUPERSAMPLE = 4
_MIN_SIZE, _MAX_SIZE = 24.0, 128.0  # px, the side of an object's square before rotation and clipping
_MIN_VISIBLE_SIDE = 8.0  # px: an object cut by the border or covered keeps this much of each side
_MIN_VISIBLE_FRACTION = 0.5  # of an object's area, left visible by the objects drawn over it


class ShapesConfig(tfds.core.BuilderConfig):
    """Sizes and seed of one build of the set; the name (hence the directory) follows from them."""

    def __init__(self, *, num_train: int = 500, num_test: int = 100, seed: int = 0, **kwargs):
        self.num_train = int(num_train)
        self.num_test = int(num_test)
        self.seed = int(seed)
        kwargs.setdefault("name", f"train{self.num_train}_test{self.num_test}_seed{self.seed}")
        kwargs.setdefault("description",
                          f"{self.num_train} train and {self.num_test} test images, seed {self.seed}")
        super().__init__(**kwargs)


class Shapes(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """The synthetic shapes detection set (see the module docstring)."""

    VERSION = tfds.core.Version("1.2.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "Objects of 24-128 px (16-128 before): shapes under ~24 px are a "
                              "handful of stride-16 cells, too few to tell a cross from a square.",
                     "1.2.0": "Boxes of the visible part of each object, as VOC and COCO annotate: "
                              "where a later object covers an end of an earlier one, its box ends "
                              "where it is still visible, and an object past the border is boxed "
                              "to its part inside the image (before, its whole extent clamped: "
                              "too large where a corner lay past another side). 6 % of the "
                              "boxes were larger than what the image shows by over 2 px, up to "
                              "25. An object that would leave an earlier one under half visible, "
                              "or with a visible side under 8 px, is not drawn."}
    BUILDER_CONFIGS = [ShapesConfig()]

    def _info(self):
        return self.dataset_info_from_configs(
            description="Synthetic shapes on textured backgrounds, for keras_frcnn's default run.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "image/filename": tfds.features.Text(),
                "image/id": np.int64,
                "objects": tfds.features.Sequence({
                    "bbox": tfds.features.BBoxFeature(),
                    "label": tfds.features.ClassLabel(names=SHAPE_CLASSES),
                    "is_difficult": np.bool_,
                }),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        config = self.builder_config
        return {
            "train": self._generate_examples("train", config.num_train, config.seed),
            "test": self._generate_examples("test", config.num_test, config.seed),
        }

    def _generate_examples(self, split, num_examples, seed):
        for index in range(num_examples):
            rng = np.random.default_rng([seed, _SPLIT_IDS[split], index])
            image, boxes, labels = render_example(rng)
            height, width = image.shape[:2]
            encoded = io.BytesIO()
            Image.fromarray(image).save(encoded, format="JPEG", quality=90)
            scale = np.array([height, width, height, width], np.float64)
            yield f"{split}_{index:05d}", {
                "image": encoded.getvalue(),
                "image/filename": f"{split}_{index:05d}.jpg",
                "image/id": index,
                "objects": {
                    "bbox": [np.clip(np.asarray(b, np.float64) / scale, 0.0, 1.0).astype(np.float32)
                             for b in boxes],
                    "label": labels,
                    "is_difficult": [False] * len(labels),
                },
            }


def shapes_builder(data_dir=None, num_train: int = 500, num_test: int = 100, seed: int = 0) -> Shapes:
    """The builder for one size of the set (not yet built: call ``download_and_prepare()``)."""
    config = ShapesConfig(num_train=num_train, num_test=num_test, seed=seed)
    # TFDS refuses a custom config object named like one of the class's own: pass that by name.
    if config.name in Shapes.builder_configs:
        config = config.name
    # Another size is a config object of its own, which TFDS announces with a warning carrying the
    # whole object ("Using custom data configuration: ShapesConfig(...)") on every load: left out.
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return Shapes(config=config, data_dir=data_dir)
    finally:
        absl_logging.set_verbosity(verbosity)


def load_shapes(split: str = "train", data_dir=None, num_train: int = 500, num_test: int = 100,
                seed: int = 0, decode_images: bool = True) -> DetectionSource:
    """Build the set under ``data_dir`` if needed (seconds, no network) and load ``split``.

    data_dir: TFDS's data directory (default: TFDS's, ``~/tensorflow_datasets`` or
      ``$TFDS_DATA_DIR``); the set lands in ``data_dir/shapes/<config name>/<version>/``.
    decode_images: ``image`` as uint8 ``[H, W, 3]`` (True) or the encoded JPEG bytes (False).
    """
    data_dir = expanded(data_dir)  # ("~/tensorflow_datasets")
    builder = prepared(  # two runs started together build it once
        functools.partial(shapes_builder, data_dir, num_train=num_train, num_test=num_test, seed=seed),
        tfds.download.DownloadConfig(compute_stats=tfds.download.ComputeStatsMode.SKIP))
    dataset, num_examples = read_split(builder, split, decode_images)
    dataset = dataset.map(from_tfds_example, num_parallel_calls=1, deterministic=True)
    return DetectionSource(
        dataset=dataset,
        class_names=SHAPE_CLASSES,
        num_examples=num_examples,
        name=f"shapes/{builder.builder_config.name} {split}",
        fingerprint=f"TFDS {builder.info.full_name} {split}",  # (its version: 1.2.0 boxes otherwise than 1.1.0)
        files=split_examples(builder, split),
    )


# --- drawing ------------------------------------------------------------------------------------


def render_example(rng: np.random.Generator):
    """One image and its objects, drawn from ``rng``.

    Returns ``image`` uint8 ``[H, W, 3]``, ``boxes`` a list of ``[ymin, xmin, ymax, xmax]`` in
    continuous pixel coordinates (the extent of what is visible of each object: the module
    docstring) and ``labels`` (indices into ``SHAPE_CLASSES``). Later objects are drawn over
    earlier ones.
    """
    height, width = (int(v) for v in rng.integers(224, 289, size=2))
    image = _background(rng, height, width)
    drawn, labels = [], []
    # A few images without objects (negatives), mostly 1-6 objects.
    num_objects = int(rng.choice(7, p=[0.03, 0.17, 0.2, 0.2, 0.16, 0.14, 0.1]))
    for _ in range(num_objects):
        for _attempt in range(30):
            label = int(rng.integers(len(SHAPE_CLASSES)))
            size = math.exp(rng.uniform(math.log(_MIN_SIZE), math.log(min(_MAX_SIZE, 0.55 * min(height, width)))))
            if rng.random() < 0.2:  # free placement: may touch or be cut by the border
                cx = rng.uniform(-0.25 * size, width + 0.25 * size)
                cy = rng.uniform(-0.25 * size, height + 0.25 * size)
            else:
                cx = rng.uniform(size / 2, width - size / 2)
                cy = rng.uniform(size / 2, height - size / 2)
            parts = _shape_parts(rng, label, cx, cy, size)
            full = _extent(parts)
            box = _extent_in_image(parts, height, width)
            if box is None or not _acceptable(box, full, [earlier.extent for earlier in drawn]):
                continue
            new = _Drawn(box, _samples(parts, box))
            if any(not _still_visible(earlier, new) for earlier in drawn):
                continue
            colour = _object_colour(rng, image, box)
            alpha = new.coverage()
            y0, x0 = new.origin
            region = image[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]]
            shading = 1.0 + rng.normal(0.0, 0.04, size=alpha.shape + (1,))
            blended = region * (1.0 - alpha[..., None]) + colour * shading * alpha[..., None]
            image[y0:y0 + alpha.shape[0], x0:x0 + alpha.shape[1]] = blended
            for earlier in drawn:
                earlier.cover(new)
            drawn.append(new)
            labels.append(label)
            break
    image += rng.normal(0.0, 4.0, size=image.shape)  # sensor-like noise over everything
    boxes = [obj.visible_box() for obj in drawn]
    return np.clip(np.round(image), 0, 255).astype(np.uint8), boxes, labels


def _background(rng, height, width):
    """float ``[H, W, 3]``: two muted colours mixed by smooth noise, plus fine grain and clutter."""
    c0, c1 = rng.uniform(30, 200, size=(2, 3))
    grid = rng.random((height // 24 + 2, width // 24 + 2)).astype(np.float32)
    smooth = np.asarray(Image.fromarray(grid).resize((width, height), Image.BICUBIC))
    smooth = np.clip(smooth, 0.0, 1.0)[..., None]
    image = c0 + (c1 - c0) * smooth
    image += rng.normal(0.0, 10.0, size=(height, width, 1))  # grey grain
    # Thin straight lines: edges that are not objects.
    yy, xx = np.mgrid[0:height, 0:width] + 0.5
    for _ in range(int(rng.integers(0, 4))):
        angle = rng.uniform(0, math.pi)
        offset = rng.uniform(-0.5, 0.5) * (height + width) / 2
        distance = np.abs((xx - width / 2) * math.sin(angle) - (yy - height / 2) * math.cos(angle) - offset)
        line = np.clip(1.5 - distance, 0.0, 1.0)[..., None]
        image = image * (1 - 0.5 * line) + rng.uniform(0, 255, size=3) * 0.5 * line
    return image


def _shape_parts(rng, label, cx, cy, size):
    """The shape as ``("circle", (cx, cy, r))`` or convex polygons ``("poly", [x, y] [V, 2])``."""
    name = SHAPE_CLASSES[label]
    r = size / 2
    if name == "circle":
        return [("circle", (cx, cy, r))]
    if name == "square":
        angle = rng.uniform(-math.pi / 12, math.pi / 12)
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * r
        return [("poly", _place(corners, angle, cx, cy))]
    if name == "triangle":
        angle = rng.uniform(0, 2 * math.pi)
        corners = np.array([[math.cos(a), math.sin(a)] for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]) * r
        return [("poly", _place(corners, angle, cx, cy))]
    # cross: two bars of a third of the size
    angle = rng.uniform(-math.pi / 12, math.pi / 12)
    t = r / 3
    bar = np.array([[-r, -t], [r, -t], [r, t], [-r, t]], np.float64)
    return [("poly", _place(bar, angle, cx, cy)), ("poly", _place(bar[:, ::-1], angle, cx, cy))]


def _place(corners, angle, cx, cy):
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    return corners @ rotation.T + np.array([cx, cy])


def _extent(parts):
    """``[ymin, xmin, ymax, xmax]`` of the drawn geometry (unclipped)."""
    ymin = xmin = math.inf
    ymax = xmax = -math.inf
    for kind, geometry in parts:
        if kind == "circle":
            cx, cy, r = geometry
            ys, xs = (cy - r, cy + r), (cx - r, cx + r)
        else:
            xs, ys = geometry[:, 0], geometry[:, 1]
        ymin, ymax = min(ymin, min(ys)), max(ymax, max(ys))
        xmin, xmax = min(xmin, min(xs)), max(xmax, max(xs))
    return np.array([ymin, xmin, ymax, xmax])


def _extent_in_image(parts, height, width):
    """``[ymin, xmin, ymax, xmax]`` of the part of the geometry inside the image (exact), or None.

    Not the whole extent clipped: a shape whose corner lies past one border reaches less far along
    the other axis inside the image (a triangle's tip cut off)."""
    extents = []
    for kind, geometry in parts:
        if kind == "circle":
            cx, cy, r = geometry
            # Inside the band 0 <= x <= W the disc reaches cy +- sqrt(r^2 - dx^2), dx the centre's
            # distance to the band; then the band 0 <= y <= H cuts that range.
            dx, dy = max(-cx, 0.0, cx - width), max(-cy, 0.0, cy - height)
            if dx >= r or dy >= r:
                continue
            ry, rx = math.sqrt(r * r - dx * dx), math.sqrt(r * r - dy * dy)
            part = [max(cy - ry, 0.0), max(cx - rx, 0.0), min(cy + ry, height), min(cx + rx, width)]
            if part[0] < part[2] and part[1] < part[3]:
                extents.append(part)
            continue
        inside = _clip_convex(geometry, width, height)
        if len(inside) >= 3:
            xs, ys = inside[:, 0], inside[:, 1]
            extents.append([ys.min(), xs.min(), ys.max(), xs.max()])
    if not extents:
        return None
    extents = np.array(extents, np.float64)
    box = np.array([extents[:, 0].min(), extents[:, 1].min(), extents[:, 2].max(), extents[:, 3].max()])
    return np.clip(box, 0.0, [height, width, height, width])  # (a crossing rounded past a side)


def _clip_convex(polygon, width, height):
    """The convex polygon ``[V, 2]`` (x, y) cut to ``0 <= x <= width, 0 <= y <= height``
    (Sutherland-Hodgman, one image side at a time): ``[V', 2]``, empty when nothing is inside."""
    points = [tuple(p) for p in polygon]
    for axis, limit, keep_below in ((0, 0.0, False), (0, float(width), True),
                                    (1, 0.0, False), (1, float(height), True)):
        def inside(p):
            return p[axis] <= limit if keep_below else p[axis] >= limit
        out = []
        for a, b in zip(points, points[1:] + points[:1]):
            if inside(b):
                if not inside(a):
                    out.append(_cross(a, b, axis, limit))
                out.append(b)
            elif inside(a):
                out.append(_cross(a, b, axis, limit))
        points = out
        if not points:
            break
    return np.array(points, np.float64).reshape(-1, 2)


def _cross(a, b, axis, limit):
    """Where segment ``a``-``b`` crosses the line ``coordinate[axis] == limit``."""
    t = (limit - a[axis]) / (b[axis] - a[axis])
    return tuple(a[k] + t * (b[k] - a[k]) for k in range(2))


def _area(box):
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def _acceptable(box, full, boxes):
    """Keep objects recognisable: enough of them inside the image, not hiding earlier ones."""
    if box[2] - box[0] < _MIN_VISIBLE_SIDE or box[3] - box[1] < _MIN_VISIBLE_SIDE:
        return False
    if _area(box) < 0.5 * _area(full):
        return False
    for other in boxes:
        overlap = [max(box[0], other[0]), max(box[1], other[1]), min(box[2], other[2]), min(box[3], other[3])]
        inter = _area(overlap)
        if inter / (_area(box) + _area(other) - inter) > 0.3 or inter > 0.4 * _area(other):
            return False
    return True


def _object_colour(rng, image, box):
    """A saturated colour that stands out from the background under the box."""
    y0, x0, y1, x1 = (int(v) for v in (box[0], box[1], math.ceil(box[2]), math.ceil(box[3])))
    under = image[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
    for _ in range(20):
        hue, saturation, value = rng.uniform(0, 1), rng.uniform(0.5, 1.0), rng.uniform(0.55, 1.0)
        colour = np.array(_hsv_to_rgb(hue, saturation, value)) * 255
        if np.abs(colour - under).sum() > 150:
            break
    return colour


def _hsv_to_rgb(h, s, v):
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


def _samples(parts, box):
    """Which supersamples of the box's pixel region the shape covers: bool ``[h * n, w * n]``.

    Pixel ``(i, j)`` of the region is image pixel ``(floor(ymin) + i, floor(xmin) + j)``; it is
    sampled at ``n ** 2`` points (``n = _SUPERSAMPLE``) inside ``[j, j + 1) x [i, i + 1)``.
    """
    y0, x0 = math.floor(box[0]), math.floor(box[1])
    y1, x1 = math.ceil(box[2]), math.ceil(box[3])
    n = _SUPERSAMPLE
    ys = y0 + (np.arange((y1 - y0) * n) + 0.5) / n
    xs = x0 + (np.arange((x1 - x0) * n) + 0.5) / n
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    inside = np.zeros(yy.shape, bool)
    for kind, geometry in parts:
        if kind == "circle":
            cx, cy, r = geometry
            inside |= (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        else:
            inside |= _inside_convex(geometry, xx, yy)
    return inside


class _Drawn:
    """One drawn object: its geometry's extent inside the image, its supersamples and which of them the
    objects drawn later left visible (bool ``[h * n, w * n]`` over its box's pixel region, whose
    top-left pixel is ``origin``)."""

    def __init__(self, extent, inside):
        self.extent = extent
        self.origin = (math.floor(extent[0]), math.floor(extent[1]))
        self.inside = inside
        self.visible = inside.copy()

    def coverage(self):
        """The fraction of each pixel of the region the shape covers: float ``[h, w]``."""
        n = _SUPERSAMPLE
        h, w = self.inside.shape[0] // n, self.inside.shape[1] // n
        return self.inside.reshape(h, n, w, n).mean(axis=(1, 3))

    def _overlap(self, other):
        """Slices of ``self``'s and ``other``'s sample grids over their common samples (or None)."""
        n = _SUPERSAMPLE
        (ay, ax), (by, bx) = self.origin, other.origin
        top, left = max(ay, by) * n, max(ax, bx) * n
        bottom = min(ay * n + self.inside.shape[0], by * n + other.inside.shape[0])
        right = min(ax * n + self.inside.shape[1], bx * n + other.inside.shape[1])
        if bottom <= top or right <= left:
            return None
        mine = (slice(top - ay * n, bottom - ay * n), slice(left - ax * n, right - ax * n))
        theirs = (slice(top - by * n, bottom - by * n), slice(left - bx * n, right - bx * n))
        return mine, theirs

    def visible_under(self, other):
        """The samples of this object still visible with ``other`` drawn over it (a new array)."""
        visible = self.visible.copy()
        overlap = self._overlap(other)
        if overlap is not None:
            mine, theirs = overlap
            visible[mine] &= ~other.inside[theirs]
        return visible

    def cover(self, other):
        """``other`` is drawn over this object: hide the samples it covers."""
        self.visible = self.visible_under(other)

    def visible_box(self, visible=None):
        """``[ymin, xmin, ymax, xmax]`` of the visible samples: a side no later object reaches is
        the geometry's own (exact) edge, a covered side the edge of the outermost visible sample."""
        visible = self.visible if visible is None else visible
        n = _SUPERSAMPLE
        box = np.array(self.extent, np.float64)
        for axis in (0, 1):  # rows (y), then columns (x)
            seen = np.nonzero(visible.any(axis=1 - axis))[0]
            whole = np.nonzero(self.inside.any(axis=1 - axis))[0]
            if not len(seen):
                return None
            if seen[0] != whole[0]:
                box[axis] = self.origin[axis] + seen[0] / n
            if seen[-1] != whole[-1]:
                box[axis + 2] = self.origin[axis] + (seen[-1] + 1) / n
        return box


def _still_visible(earlier, new):
    """Whether ``earlier`` stays recognisable with ``new`` drawn over it: at least half of its area
    and ``_MIN_VISIBLE_SIDE`` of each side of its visible box."""
    visible = earlier.visible_under(new)
    if visible.sum() < _MIN_VISIBLE_FRACTION * earlier.inside.sum():
        return False
    box = earlier.visible_box(visible)
    return box[2] - box[0] >= _MIN_VISIBLE_SIDE and box[3] - box[1] >= _MIN_VISIBLE_SIDE


def _inside_convex(polygon, xx, yy):
    """Points inside a convex polygon (either winding): on the same side of every edge."""
    signs = []
    for (ax, ay), (bx, by) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        signs.append((bx - ax) * (yy - ay) - (by - ay) * (xx - ax))
    signs = np.stack(signs)
    return np.all(signs >= 0, axis=0) | np.all(signs <= 0, axis=0)
