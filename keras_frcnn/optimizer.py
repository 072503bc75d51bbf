"""The paper's solver: Caffe's SGD with momentum, L2 weight decay and the nets' per-layer multipliers.

py-faster-rcnn's VGG-16 and ZF solvers (``solver.prototxt``: ``momentum: 0.9``, ``weight_decay:
0.0005``) and nets (every conv / fc layer: ``param { lr_mult: 1 } param { lr_mult: 2 }``, the
weights and the biases, both with Caffe's default ``decay_mult: 1``) update each parameter ``w``
with gradient ``g`` as

    v = momentum * v + lr_mult * lr * (g + decay_mult * weight_decay * w)
    w = w - v

The decay is part of the gradient, so it goes through the momentum: in the steady state it decays
weights ``1 / (1 - momentum)`` = 10 times harder than Keras's ``SGD(weight_decay=...)``, which
subtracts ``lr * weight_decay * w`` outside the momentum (decoupled decay, as AdamW).

``CaffeSGD`` is Keras's ``SGD`` with that rule: weights (Keras variables named ``kernel``) get the
L2 term, biases (``bias``) twice the learning rate and the L2 term times ``bias_decay_multiplier``
(1 as py-faster-rcnn; 0 as tf-faster-rcnn's ``BIAS_DECAY: False``), and the other trainable variables
(batch-norm ``gamma`` / ``beta`` of the shapes preset's base, which Caffe's VGG-16 and ZF do not
have) the plain learning rate and no decay. ``decoupled=True`` instead decays weights outside the
momentum, as Keras's own SGD (kept as an option for nets with batch norm, where it is the common
choice).
"""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="keras_frcnn")
class CaffeSGD(keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with Caffe's L2 weight decay and bias learning-rate multiplier.

    Args:
      learning_rate, momentum: as ``keras.optimizers.SGD``.
      l2: the weight decay (Caffe's ``weight_decay``) of the variables named ``kernel``.
      bias_lr_multiplier: Caffe's ``lr_mult`` of the variables named ``bias``.
      bias_decay_multiplier: Caffe's ``decay_mult`` of the variables named ``bias``.
      decoupled: decay outside the momentum (``w -= lr * l2 * w``) instead of Caffe's L2.
    """

    def __init__(self, learning_rate=0.001, momentum=0.9, l2=5e-4, bias_lr_multiplier=2.0,
                 decoupled=False, bias_decay_multiplier=1.0, **kwargs):
        kwargs.pop("weight_decay", None)  # the decay is this class's own (l2)
        super().__init__(learning_rate=learning_rate, momentum=float(momentum), **kwargs)
        self.l2 = float(l2)
        self.bias_lr_multiplier = float(bias_lr_multiplier)
        self.bias_decay_multiplier = float(bias_decay_multiplier)
        self.decoupled = bool(decoupled)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        # What each variable is, by its Keras name, in the order of _get_variable_index.
        self._kinds = ["kernel" if v.name == "kernel" else "bias" if v.name == "bias" else "other"
                       for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        index = self._get_variable_index(variable)
        kind = self._kinds[index]
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        decay = self.l2 * {"kernel": 1.0, "bias": self.bias_decay_multiplier}.get(kind, 0.0)
        if decay and self.decoupled:
            self.assign_sub(variable, ops.multiply(variable, learning_rate * decay))
            decay = 0.0
        if kind == "bias":
            learning_rate = learning_rate * self.bias_lr_multiplier
        if self.momentum and not self.nesterov and not tf.distribute.has_strategy() \
                and isinstance(variable, tf.Variable):
            # Fused kernels: ResourceApplyKerasMomentum is m = momentum * m - lr * g; w += m (Keras's
            # SGD writes it as five element-wise ops and two assignments: ~7 % of a shapes training
            # step). Caffe's L2 term goes into the momentum first, m -= lr * decay / momentum * w
            # (ResourceApplyGradientDescent on m, one pass over m and w), so that the update is
            # m = momentum * m - lr * (g + decay * w) without the two passes of g + decay * w.
            # Under a tf.distribute strategy (distributed variables) Keras's own update runs.
            momentum = ops.cast(self.momentum, variable.dtype)
            accumulator = self.momentums[index].value
            if decay:
                tf.raw_ops.ResourceApplyGradientDescent(
                    var=accumulator.handle, alpha=learning_rate * (decay / self.momentum),
                    delta=variable.read_value(), use_locking=False)
            tf.raw_ops.ResourceApplyKerasMomentum(
                var=variable.handle, accum=accumulator.handle, lr=learning_rate, grad=gradient,
                momentum=momentum, use_locking=False, use_nesterov=False)
            return
        if decay:
            gradient = ops.add(gradient, ops.multiply(variable, ops.cast(decay, variable.dtype)))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config.pop("weight_decay", None)
        return {**config, "l2": self.l2, "bias_lr_multiplier": self.bias_lr_multiplier,
                "bias_decay_multiplier": self.bias_decay_multiplier, "decoupled": self.decoupled}


@keras.saving.register_keras_serializable(package="keras_frcnn")
class StepWithWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """``lr`` for the updates before ``drop_step``, then ``lr * drop`` (Caffe's ``lr_policy:
    "step"``, ``lr * drop ** floor(iter / stepsize)`` with one drop: the update of iteration
    ``drop_step``, counted from 0 as Keras's ``iterations``, is the first at the lower rate); over
    the first ``warmup_steps`` the rate rises linearly from ``warmup_factor * lr`` (Detectron's and
    torchvision's linear warm-up, ``WARM_UP_METHOD: linear``: factor
    ``f + (1 - f) * step / warmup_steps``)."""

    def __init__(self, lr, drop_step, drop=0.1, warmup_steps=0, warmup_factor=0.001):
        self.lr = float(lr)
        self.drop_step = int(drop_step)
        self.drop = float(drop)
        self.warmup_steps = int(warmup_steps)
        self.warmup_factor = float(warmup_factor)

    def __call__(self, step):
        step = ops.cast(step, "float32")
        rate = ops.where(step < self.drop_step, self.lr, self.lr * self.drop)
        if self.warmup_steps > 0:
            progress = ops.minimum(step / self.warmup_steps, 1.0)
            rate = rate * (self.warmup_factor + (1.0 - self.warmup_factor) * progress)
        return rate

    def get_config(self):
        return {"lr": self.lr, "drop_step": self.drop_step, "drop": self.drop,
                "warmup_steps": self.warmup_steps, "warmup_factor": self.warmup_factor}
