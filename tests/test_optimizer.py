"""The paper's solver: one and two optimizer steps on a small layer against Caffe's update
written out by hand: ``v = m v + lr_mult lr (g + decay_mult wd w)``, ``w -= v``."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_frcnn.optimizer import CaffeSGD, StepWithWarmup

LR, MOMENTUM, WD = 0.1, 0.9, 0.01


def _layer_and_gradients(seed=0):
    rng = np.random.default_rng(seed)
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    layer.kernel.assign(rng.normal(size=(3, 2)).astype(np.float32))
    layer.bias.assign(rng.normal(size=(2,)).astype(np.float32))
    gradients = [[rng.normal(size=v.shape).astype(np.float32) for v in (layer.kernel, layer.bias)]
                 for _ in range(2)]
    return layer, gradients


def caffe_steps(kernel, bias, gradients, decoupled=False, bias_decay_mult=1):
    """Caffe's SGDSolver (ComputeUpdateValue with L2 Regularize) in numpy, float64; the nets'
    ``param { lr_mult: 1 } param { lr_mult: 2 }``: ``decay_mult`` 1 (Caffe's default) on both."""
    params = {"kernel": kernel.astype(np.float64), "bias": bias.astype(np.float64)}
    history = {k: np.zeros_like(v) for k, v in params.items()}
    for g_kernel, g_bias in gradients:
        for name, g, lr_mult, decay_mult in (("kernel", g_kernel, 1, 1), ("bias", g_bias, 2, bias_decay_mult)):
            w = params[name]
            if decoupled:
                w = w - LR * WD * decay_mult * w
                diff = g
            else:
                diff = g + decay_mult * WD * w
            history[name] = MOMENTUM * history[name] + lr_mult * LR * diff
            params[name] = w - history[name]
    return params


@pytest.mark.parametrize("decoupled, bias_decay, graph", [(False, 1.0, False), (True, 1.0, False), (False, 0.0, False),
                                                          (False, 1.0, True)],
                         ids=["caffe L2", "decoupled", "biases undecayed", "caffe L2 in a tf.function"])
def test_two_steps_equal_caffes_update(decoupled, bias_decay, graph):
    layer, gradients = _layer_and_gradients()
    expected = caffe_steps(layer.kernel.numpy(), layer.bias.numpy(), gradients, decoupled, bias_decay)
    optimizer = CaffeSGD(learning_rate=LR, momentum=MOMENTUM, l2=WD, bias_lr_multiplier=2.0,
                         decoupled=decoupled, bias_decay_multiplier=bias_decay)
    optimizer.build(layer.trainable_variables)

    def apply(g_kernel, g_bias):  # the L2 term's update of the momentum must come before its use
        optimizer.apply_gradients([(g_kernel, layer.kernel), (g_bias, layer.bias)])

    apply = tf.function(apply) if graph else apply
    for g_kernel, g_bias in gradients:
        apply(tf.constant(g_kernel), tf.constant(g_bias))
    np.testing.assert_allclose(layer.kernel.numpy(), expected["kernel"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), expected["bias"], rtol=1e-5, atol=1e-6)
    # Keras's SGD(weight_decay=...) is the decoupled rule only: it cannot give Caffe's.
    plain_layer, _ = _layer_and_gradients()
    keras_sgd = keras.optimizers.SGD(learning_rate=LR, momentum=MOMENTUM, weight_decay=WD)
    for g_kernel, g_bias in gradients:
        keras_sgd.apply_gradients([(tf.constant(g_kernel), plain_layer.kernel),
                                   (tf.constant(g_bias), plain_layer.bias)])
    assert not np.allclose(plain_layer.kernel.numpy(), caffe_steps(
        *(v.numpy() for v in _layer_and_gradients()[0].weights), gradients)["kernel"], rtol=1e-5)


def test_without_momentum_the_l2_term_is_in_the_gradient():
    layer, gradients = _layer_and_gradients()
    kernel, bias = layer.kernel.numpy().astype(np.float64), layer.bias.numpy().astype(np.float64)
    optimizer = CaffeSGD(learning_rate=LR, momentum=0.0, l2=WD, bias_lr_multiplier=2.0)
    for g_kernel, g_bias in gradients:
        optimizer.apply_gradients([(tf.constant(g_kernel), layer.kernel), (tf.constant(g_bias), layer.bias)])
        kernel, bias = kernel - LR * (g_kernel + WD * kernel), bias - 2 * LR * (g_bias + WD * bias)
    np.testing.assert_allclose(layer.kernel.numpy(), kernel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.bias.numpy(), bias, rtol=1e-5, atol=1e-6)


def test_config_round_trip():
    optimizer = CaffeSGD(learning_rate=0.01, momentum=0.9, l2=5e-4, bias_lr_multiplier=2.0, bias_decay_multiplier=0.0)
    again = CaffeSGD.from_config(optimizer.get_config())
    assert (again.l2, again.bias_lr_multiplier, again.bias_decay_multiplier, again.decoupled, again.momentum) \
        == (5e-4, 2.0, 0.0, False, 0.9)
    assert keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)).l2 == 5e-4


def test_step_schedule_with_linear_warmup():
    plain = StepWithWarmup(0.01, drop_step=100, drop=0.1)
    for step in (0, 1, 99, 100, 101, 500):  # Caffe's "step" policy: base_lr * gamma^floor(iter / stepsize)
        assert float(plain(step)) == pytest.approx(0.01 * 0.1 ** min(step // 100, 1))
    warm = StepWithWarmup(0.01, drop_step=100, drop=0.1, warmup_steps=50, warmup_factor=0.001)
    expected = {0: 0.01 * 0.001, 25: 0.01 * (0.001 + 0.999 * 0.5), 50: 0.01, 99: 0.01, 100: 0.001, 101: 0.001}
    for step, rate in expected.items():
        assert float(warm(step)) == pytest.approx(rate, rel=1e-6)
    assert StepWithWarmup(**warm.get_config()).get_config() == warm.get_config()


def test_the_runner_optimizer_warms_up_each_stage():
    import dataclasses

    from conftest import tiny_config
    from keras_frcnn.training import make_optimizer, stages

    cfg = tiny_config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, warmup_steps=10, lr=0.02))
    for stage in stages(cfg, steps=40):
        schedule = make_optimizer(cfg, stage)._learning_rate  # the schedule (.learning_rate: its value now)
        assert float(schedule(0)) == pytest.approx(0.02 * 0.001) and float(schedule(10)) == pytest.approx(0.02)
