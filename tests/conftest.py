import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_boxes(rng, n, size=200.0, min_side=1.0):
    """``[n, 4]`` yxyx float32 boxes with sides >= min_side inside [0, size]."""
    y0 = rng.uniform(0, size - min_side, n)
    x0 = rng.uniform(0, size - min_side, n)
    y1 = y0 + rng.uniform(min_side, size - y0 + 1e-3)
    x1 = x0 + rng.uniform(min_side, size - x0 + 1e-3)
    return np.stack([y0, x0, np.minimum(y1, size), np.minimum(x1, size)], 1).astype(np.float32)
