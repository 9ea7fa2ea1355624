"""Fashion-MNIST files with random images, in the IDX layout the dataset reader expects."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from exits.data import write_idx


def fashion_files(root: Path, n_train: int = 40, n_test: int | None = None) -> Path:
    """``train``/``t10k`` image and label files under ``root`` (labels cycle through the 10 classes)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_train if n_test is None else n_test)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return root
