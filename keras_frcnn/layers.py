"""The Keras layers of the detector, in data-path order (one home each; imported here)."""

from keras_frcnn.anchors import Anchors
from keras_frcnn.backbone import PaddingMask
from keras_frcnn.preprocessing import Preprocess
from keras_frcnn.proposals import Proposals
from keras_frcnn.roi_pooling import RoIPooling

__all__ = ["Preprocess", "PaddingMask", "Anchors", "Proposals", "RoIPooling"]
