"""The honest participant: one local epoch per round on its own partition, as in the paper."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import ConfigRecord, RecordDict

from fedattack import protocol
from fedattack.config import Experiment, PrivacyConfig
from fedattack.data import Dataset, Splits
from fedattack.experiment import cached_dataset, experiment_splits, initial_model
from fedattack.privacy import share_largest, train_private
from fedattack.training import (
    BatchDataset,
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


PROXIMAL_MU = "proximal_mu"  # the key flwr.server.strategy.FedProx puts in the fit config
ACCOUNTANT = "dp-accountant"  # state key: this node's DP-SGD accountant history


def round_seed(seed: int, server_round: int, partition_id: int) -> int:
    """A distinct, reproducible seed for each participant's shuffling in each round."""
    return int(np.random.SeedSequence([seed, server_round, partition_id]).generate_state(1)[0])


class HonestClient(NumPyClient):
    """Trains the received global model on its partition and uploads the result.

    Under `privacy`, an honest participant trains with DP-SGD (its accountant's history kept in
    the node's state) and shares selectively; roles that do not defend themselves set
    `defended = False`.
    """

    defended = True

    def __init__(self, partition_id: int, data_root: str | None = None,
                 threads: int | None = None, state: RecordDict | None = None,
                 run_dir: str | None = None) -> None:
        self.partition_id = partition_id
        self.data_root = data_root
        self.run_dir = run_dir  # where a role that records what it observes writes it
        self.state = state if state is not None else RecordDict()  # the node's memory
        if threads:
            set_torch_threads(threads)

    def setup(self, config) -> tuple[Experiment, Dataset, np.ndarray]:
        exp, dataset, splits = experiment_setup(str(config[protocol.EXPERIMENT]), self.data_root)
        if not 0 <= self.partition_id < len(splits.partitions):
            last = len(splits.partitions) - 1
            raise ValueError(f"partition {self.partition_id} outside 0..{last}")
        return exp, dataset, splits.partitions[self.partition_id]

    def privacy(self, exp: Experiment) -> PrivacyConfig | None:
        return exp.privacy if self.defended else None

    def local_train(self, parameters, config) -> tuple[torch.nn.Module, dict, int]:
        """Train `parameters` on this participant's data for the configured local epochs."""
        exp, dataset, indices = self.setup(config)
        model, stats = self.train_on(exp, dataset, indices, parameters, config)
        return model, stats, len(indices)

    def train_on(self, exp: Experiment, data: BatchDataset, indices: np.ndarray, parameters,
                 config) -> tuple[torch.nn.Module, dict]:
        """The global model trained on `data[indices]` (with DP-SGD under `privacy`)."""
        device = resolve_device(exp.device)
        _, dataset, _ = self.setup(config)  # this node's copy (its data-path), for the shapes
        model = initial_model(exp, dataset)
        set_weights(model, parameters)
        model.to(device)
        optimizer = make_optimizer(model, exp.training)
        set_lr(optimizer, float(config[protocol.LR]))
        server_round = int(config[protocol.SERVER_ROUND])
        generator = torch.Generator().manual_seed(round_seed(exp.seed, server_round,
                                                             self.partition_id))
        privacy = self.privacy(exp)
        if privacy is not None and privacy.noise_multiplier is not None:
            return model, self.train_private(exp, data, indices, model, optimizer, device,
                                             generator)
        # FedProx (Flower's strategy sends proximal_mu): the local loss gains
        # proximal_mu / 2 * ||w - w_global||^2, w_global the model received this round.
        mu = float(config.get(PROXIMAL_MU, 0.0))
        proximal = (mu, [p.detach().clone() for p in model.parameters()]) if mu > 0 else None
        stats: dict = {}
        for _ in range(exp.federation.local_epochs):
            stats = train_epoch(model, data, indices, optimizer, exp.training.batch_size,
                                device, generator, proximal=proximal)
        return model, stats

    def train_private(self, exp: Experiment, data: BatchDataset, indices: np.ndarray, model,
                      optimizer, device, generator) -> dict:
        """DP-SGD, accounted over every round this node trained; returns stats with epsilon."""
        saved = self.state.config_records.get(ACCOUNTANT)
        history = [] if saved is None else list(zip(saved["noise"], saved["rate"],
                                                    saved["steps"], strict=True))
        done = train_private(model, data, indices, optimizer, exp.privacy,
                             exp.training.batch_size, exp.federation.local_epochs, device,
                             generator, history)
        noise, rate, steps = (list(column) for column in zip(*done.history, strict=True))
        self.state.config_records[ACCOUNTANT] = ConfigRecord(
            {"noise": noise, "rate": rate, "steps": steps})
        return {**done.stats, "epsilon": done.epsilon}

    def fit(self, parameters, config):
        model, stats, n = self.local_train(parameters, config)
        exp, _, _ = self.setup(config)
        weights = get_weights(model)
        privacy = self.privacy(exp)
        if privacy is not None:
            weights = share_largest(parameters, weights, privacy.share_fraction)
        metrics = {protocol.PARTITION_ID: self.partition_id,
                   **{k: float(v) for k, v in stats.items()}}
        metrics["train_loss"] = metrics.pop("loss")
        metrics["train_accuracy"] = metrics.pop("accuracy")
        return weights, n, metrics
