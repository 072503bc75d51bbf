"""TensorBoard extras beyond Keras's own callback: the learning rate per chunk, and after training
the mAP and a few test images with their detections drawn."""

import keras
import numpy as np
import tensorflow as tf


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` to the epoch logs (put it before ``keras.callbacks.TensorBoard``)."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        optimizer = self.model.optimizer
        lr = optimizer.learning_rate
        if callable(lr):
            lr = lr(optimizer.iterations)
        logs["learning_rate"] = float(np.asarray(lr))


def log_evaluation(model, source, summary, log_dir, num_images=4):
    """Write the mAP scalars and ``num_images`` test images with drawn detections."""
    from keras_frcnn.data.pipeline import eval_dataset
    from keras_frcnn.visualize import draw_detections

    writer = tf.summary.create_file_writer(log_dir)
    drawn = []
    for batch in eval_dataset(source).take(num_images):
        image = batch["images"][0].numpy()
        out = {k: v.numpy()[0] for k, v in model(image[None]).items()}
        n = int(out["num_detections"])
        drawn.append(draw_detections(image, out["boxes"][:n], out["confidence"][:n], out["labels"][:n],
                                     model.class_names, min_score=0.3))
    with writer.as_default():
        tf.summary.scalar("mAP_voc07", summary["mAP"] or 0.0, step=0)
        tf.summary.scalar("mAP_area", summary["mAP_area"] or 0.0, step=0)
        for i, image in enumerate(drawn):
            tf.summary.image(f"detections/{i}", image[None], step=0)
    writer.flush()
