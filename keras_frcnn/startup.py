"""TensorFlow loaded without its start-up chatter.

TF 2.21's C++ libraries print lines while they load (oneDNN, CUDA probing, CPU features) before
TensorFlow's logging is set up, so ``TF_CPP_MIN_LOG_LEVEL`` cannot silence them. The package
loads TensorFlow through :func:`load_tensorflow_quietly` when it is imported: file descriptor 2
is held in a temporary file while TensorFlow loads and finds its devices, and shown only if that
fails. ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (errors only) unless it is set already.
"""

import os
import sys
import tempfile


def load_tensorflow_quietly():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no file descriptor 2 (some embedded interpreters): nothing to hold
        import tensorflow  # noqa: F401

        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
