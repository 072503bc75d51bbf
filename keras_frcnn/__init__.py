"""keras-frcnn: Faster R-CNN (Ren, He, Girshick, Sun 2015) for Keras 3 / TensorFlow.

Data path (one module each): ``preprocessing`` -> ``backbone`` -> ``anchors`` / ``proposals`` ->
``roi_pooling``, with ``boxes`` (box coding) beside them and ``config`` for every setting.
"""

from keras_frcnn.config import Config, preset

__version__ = "0.1.0"
__all__ = ["Config", "preset", "__version__"]
