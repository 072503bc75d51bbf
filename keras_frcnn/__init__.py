"""keras-frcnn: Faster R-CNN (Ren, He, Girshick, Sun 2015) for Keras 3 / TensorFlow.

Data path, one module each: ``data`` -> ``preprocessing`` -> ``backbone`` -> ``rpn`` ->
``anchors`` / ``proposals`` -> ``roi_pooling`` -> ``heads`` -> ``postprocess``; beside them
``boxes`` (box coding), ``targets``, ``losses``, ``models`` (the networks and their training
views) and ``config`` (every setting).

Importing the package registers its Keras layers, so ``keras.models.load_model("model.keras")``
works after ``import keras_frcnn``. It loads TensorFlow without its C++ start-up lines
(``keras_frcnn.startup``).
"""

from keras_frcnn.startup import load_tensorflow_quietly

load_tensorflow_quietly()

from keras_frcnn.config import Config, preset  # noqa: E402
from keras_frcnn.models import FasterRCNN, build_models  # noqa: E402
from keras_frcnn import layers  # noqa: E402,F401  (registers every layer for load_model)

__version__ = "0.1.0"
__all__ = ["Config", "preset", "build_models", "FasterRCNN", "layers", "__version__"]
