"""The Keras layers of the detector, in data-path order (each has its own module)."""

from keras_frcnn.anchors import Anchors
from keras_frcnn.backbone import PaddingMask
from keras_frcnn.heads import DetectorHead
from keras_frcnn.postprocess import Detections
from keras_frcnn.preprocessing import ImageSizes, Preprocess
from keras_frcnn.proposals import Proposals
from keras_frcnn.roi_pooling import RoIPooling
from keras_frcnn.rpn import RPNHead
from keras_frcnn.targets import AnchorTargets, ProposalTargets

__all__ = ["Preprocess", "ImageSizes", "PaddingMask", "RPNHead", "Anchors", "Proposals",
           "RoIPooling", "DetectorHead", "Detections", "AnchorTargets", "ProposalTargets"]
