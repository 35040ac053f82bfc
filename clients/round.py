"""One fit instruction, parsed once: the experiment, this node's data, the round's settings.

The ClientApp parses the server's fit config into a :class:`RoundContext` and hands it to the
role; the roles read everything from it instead of parsing the config again. The node's data
come from its ``data-path`` (node_config) when it has one, else from ``data.root``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from fedattack import protocol
from fedattack.config import Experiment
from fedattack.data import Dataset, Splits
from fedattack.experiment import (
    cached_dataset,
    experiment_splits,
    initial_model,
    received_experiment,
)

PROXIMAL_MU = "proximal_mu"  # the key flwr.server.strategy.FedProx puts in the fit config


@lru_cache(maxsize=4)
def experiment_setup(exp_json: str, data_root: str | None) -> tuple[Experiment, Dataset, Splits]:
    """Parse the experiment sent by the server and derive this node's data, once per process."""
    exp = received_experiment(exp_json)
    dataset = cached_dataset(exp.data.dataset, data_root or exp.data.root, exp.data.num_records)
    return exp, dataset, experiment_splits(exp, dataset)


@dataclass(frozen=True)
class RoundContext:
    """What a participant knows when asked to train in one round."""

    exp: Experiment
    dataset: Dataset  # this node's copy (its data-path)
    splits: Splits
    partition_id: int
    server_round: int
    lr: float
    proximal_mu: float = 0.0  # FedProx's mu; 0: no proximal term

    @classmethod
    def parse(cls, config, partition_id: int, data_root: str | None) -> RoundContext:
        """The context of the fit `config` for the node holding `partition_id`; ValueError if
        the experiment has no such partition."""
        exp, dataset, splits = experiment_setup(str(config[protocol.EXPERIMENT]), data_root)
        if not 0 <= partition_id < len(splits.partitions):
            raise ValueError(f"partition {partition_id} outside 0..{len(splits.partitions) - 1}")
        return cls(exp, dataset, splits, partition_id, int(config[protocol.SERVER_ROUND]),
                   float(config[protocol.LR]), float(config.get(PROXIMAL_MU, 0.0)))

    @property
    def indices(self) -> np.ndarray:
        """This participant's training records."""
        return self.splits.partitions[self.partition_id]

    def model(self):
        """A fresh model of the experiment's architecture for this node's data."""
        return initial_model(self.exp, self.dataset)
