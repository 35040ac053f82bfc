"""In-memory stand-ins the tests share: a dataset of arrays with the `Dataset` interface the
trainers, attacks and feature extractors use (`batch`, `name`, `num_classes`, `input_shape`,
`x`, `y`), which also records the batches asked of it; a result row with real figures."""

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


def result_row(victim: str = "participant-0", attack: str = "whitebox", shift: float = 1.0,
               n: int = 200, seed: int = 0, **fields):
    """A result row of `attack` on `victim` whose figures are computed (with their bootstrap
    resamples) from `n` + `n` targets: members' scores N(shift, 1), non-members' N(0, 1);
    `fields` (by results.json key) set on top."""
    from fedattack.metrics import attack_metrics, selection_figures, target_halves
    from fedattack.results import ResultRow, is_inverted

    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    scores = np.r_[rng.normal(shift, 1, n), rng.normal(0, 1, n)]
    halves = target_halves(labels, seed)
    figures = attack_metrics(labels, scores, threshold=shift / 2, seed=seed)
    row = ResultRow(
        experiment="e", scenario="federated", attacker="global", mode="passive",
        knowledge="supervised", attack=attack, features="loss", victim=victim,
        snapshots="round-1", observed="the victim's uploads", figures=figures,
        selection=selection_figures(labels[halves.select], scores[halves.select]),
        held_out=attack_metrics(labels[halves.report], scores[halves.report],
                                threshold=shift / 2, seed=(seed, 1)),
        inverted=is_inverted(figures), target_train_accuracy=0.9, target_test_accuracy=0.8,
        global_test_accuracy=0.7, attack_time_s=1.0)
    return row.annotated(fields) if fields else row


def planning_input(exp, knowledge, dataset):
    """The parts of an attack's input (fedattack.attack_input.AttackInput) that planning its
    reference models reads: the attack settings, knowledge, dataset, seed and target recipe."""
    from types import SimpleNamespace

    from fedattack.config import AttackConfig
    from fedattack.membership import target_model

    return SimpleNamespace(settings=exp.attack or AttackConfig(), knowledge=knowledge,
                           dataset=dataset, seed=exp.seed, target=target_model(exp, dataset))
