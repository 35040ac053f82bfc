"""In-memory stand-ins the tests share: a dataset of arrays with the `Dataset` interface the
trainers, attacks and feature extractors use (`batch`, `name`, `num_classes`, `input_shape`,
`x`, `y`), which also records the batches asked of it."""

from __future__ import annotations

import numpy as np
import torch


class ArrayDataset:
    """Records `x` (numpy or torch) labelled `y`; `calls` lists the index batches requested."""

    def __init__(self, x, y, num_classes: int | None = None, name: str = "arrays") -> None:
        self.x, self.y, self.name = x, y, name
        self.num_classes = int(num_classes if num_classes is not None else int(y.max()) + 1)
        self.input_shape = tuple(x.shape[1:])
        self.calls: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self.y)

    def batch(self, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        self.calls.append(np.array(idx))
        return torch.as_tensor(self.x[idx]), torch.as_tensor(self.y[idx]).long()
