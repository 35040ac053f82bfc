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


def tiny_data(train: int, known: int, targets: int | None = None, *,
              num_records: int | None = None, nonmember: int | None = None,
              shadow: int | None = None) -> dict:
    """The ``data:`` block of a tiny experiment on the Purchase100 stand-in: ``train`` records
    per participant (or for the stand-alone model), ``known`` labelled members and non-members,
    ``targets`` members and non-members to attack (``known`` when not given), a held-out pool of
    ``nonmember`` records (twice ``train`` when not given)."""
    targets = known if targets is None else targets
    data = {"dataset": "purchase100-synth", "train_size": train,
            "nonmember_size": 2 * train if nonmember is None else nonmember,
            "knowledge": {"train_members": known, "train_nonmembers": known,
                          "test_members": targets, "test_nonmembers": targets}}
    if num_records is not None:
        data["num_records"] = num_records
    if shadow is not None:
        data["shadow_size"] = shadow
    return data


def tiny_experiment(name: str, scenario: str = "federated", *, data: dict, seed: int = 0,
                    **blocks) -> dict:
    """An experiment mapping with the stand-in's fully connected model: ``data`` from
    :func:`tiny_data`, the other blocks (federation, training, attack, ...) as given."""
    return {"name": name, "seed": seed, "scenario": scenario, "data": data,
            "model": {"arch": "purchase-fc"}, **blocks}
