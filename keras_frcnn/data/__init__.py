"""Data: every source produces the TFDS detection layout; one ``tf.data`` pipeline feeds them all.

Files, in the order data flows:

- ``examples``: the example layout, ``DetectionSource``, the 20 VOC class names.
- ``tfds_sources``: ``voc/2007``, ``voc/2012``, ``coco/2017`` (and ``shapes``) through TFDS.
- ``voc_folder``: a ``VOCdevkit/VOC2007``-style folder (defusedxml; TFDS's box conversion).
- ``coco_json``: a COCO instances JSON file and its image folder.
- ``yolo_folder``: a data set in the YOLO format (Ultralytics' ``data.yaml``, label ``.txt`` files).
- ``tfrecord_files``: TFRecord files in the TF Object Detection API's layout (and its label map).
- ``labelme_folder``: a folder of LabelMe JSON files; ``via_json``: VGG Image Annotator exports;
  ``cvat_xml``: CVAT's own export (CVAT for images 1.1).
- ``csv_files``: detection CSV files (keras-retinanet's rows, the TF OD API tutorials' and Roboflow's
  headed ones).
- ``shapes``: the built-in synthetic set, a TFDS builder generated locally.
- ``image_files`` / ``problems``: bad data caught in Python, warned about by file name.
- ``pipeline``: ``train_dataset`` (resize, flip, padded batches) and ``eval_dataset``.
"""

from keras_frcnn.data.coco_json import load_coco_json
from keras_frcnn.data.csv_files import load_csv
from keras_frcnn.data.cvat_xml import load_cvat
from keras_frcnn.data.examples import VOC_CLASSES, DetectionSource, classes_differ, in_class_order
from keras_frcnn.data.labelme_folder import load_labelme
from keras_frcnn.data.pipeline import eval_dataset, train_dataset
from keras_frcnn.data.problems import DataError
from keras_frcnn.data.shapes import SHAPE_CLASSES, Shapes, ShapesConfig, load_shapes, shapes_builder
from keras_frcnn.data.tfds_sources import load_tfds
from keras_frcnn.data.tfrecord_files import load_tfrecord
from keras_frcnn.data.via_json import load_via
from keras_frcnn.data.voc_folder import load_voc_folder, parse_voc_xml
from keras_frcnn.data.yolo_folder import load_yolo

__all__ = [
    "DataError", "DetectionSource", "SHAPE_CLASSES", "Shapes", "ShapesConfig", "VOC_CLASSES",
    "classes_differ", "eval_dataset", "in_class_order", "load_coco_json", "load_csv", "load_cvat", "load_labelme",
    "load_shapes", "load_tfds",
    "load_tfrecord",
    "load_via", "load_voc_folder", "load_yolo", "parse_voc_xml", "shapes_builder", "train_dataset",
]
