"""The honest participant: one local epoch per round on its own partition, as in the paper."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import RecordDict

from fedattack import protocol
from fedattack.config import Experiment
from fedattack.data import Dataset, Splits
from fedattack.experiment import cached_dataset, experiment_splits
from fedattack.models import build_model
from fedattack.training import (
    get_weights,
    make_optimizer,
    resolve_device,
    set_lr,
    set_torch_threads,
    set_weights,
    train_epoch,
)


@lru_cache(maxsize=4)
def experiment_setup(exp_json: str, data_root: str | None) -> tuple[Experiment, Dataset, Splits]:
    """Parse the experiment sent by the server and derive this node's data, once per process."""
    exp = Experiment.model_validate_json(exp_json)
    dataset = cached_dataset(exp.data.dataset, data_root or exp.data.root, exp.data.num_records)
    return exp, dataset, experiment_splits(exp, dataset)


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A distinct, reproducible seed for each participant's shuffling in each round."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


class HonestClient(NumPyClient):
    """Trains the received global model on its partition and uploads the result."""

    def __init__(self, partition_id: int, data_root: str | None = None,
                 threads: int | None = None, state: RecordDict | None = None) -> None:
        self.partition_id = partition_id
        self.data_root = data_root
        self.state = state if state is not None else RecordDict()  # the node's memory
        if threads:
            set_torch_threads(threads)

    def setup(self, config) -> tuple[Experiment, Dataset, np.ndarray]:
        exp, dataset, splits = experiment_setup(str(config[protocol.EXPERIMENT]), self.data_root)
        if not 0 <= self.partition_id < len(splits.partitions):
            last = len(splits.partitions) - 1
            raise ValueError(f"partition {self.partition_id} outside 0..{last}")
        return exp, dataset, splits.partitions[self.partition_id]

    def local_train(self, parameters, config) -> tuple[torch.nn.Module, dict, int]:
        """Train `parameters` on this participant's data for the configured local epochs."""
        exp, dataset, indices = self.setup(config)
        device = resolve_device(exp.device)
        model = build_model(exp.model.arch, dataset.input_shape, dataset.num_classes,
                            exp.model.activation)
        set_weights(model, parameters)
        model.to(device)
        optimizer = make_optimizer(model, exp.training)
        set_lr(optimizer, float(config[protocol.LR]))
        server_round = int(config[protocol.SERVER_ROUND])
        generator = torch.Generator().manual_seed(round_seed(exp.seed, server_round,
                                                             self.partition_id))
        stats: dict = {}
        for _ in range(exp.federation.local_epochs):
            stats = train_epoch(model, dataset, indices, optimizer, exp.training.batch_size,
                                device, generator)
        return model, stats, len(indices)

    def fit(self, parameters, config):
        model, stats, n = self.local_train(parameters, config)
        metrics = {protocol.PARTITION_ID: self.partition_id, "train_loss": float(stats["loss"]),
                   "train_accuracy": float(stats["accuracy"])}
        return get_weights(model), n, metrics
