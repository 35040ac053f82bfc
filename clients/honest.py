"""The honest participant: one local epoch per round on its own partition, as in the paper."""

from __future__ import annotations

import numpy as np
import torch
from flwr.client import NumPyClient
from flwr.common import ConfigRecord, RecordDict

from clients.round import RoundContext
from fedattack import protocol
from fedattack.config import Experiment, PrivacyConfig
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

    def context(self, config) -> RoundContext:
        """The fit config, parsed (the ClientApp parses it once and calls `fit_round`)."""
        return RoundContext.parse(config, self.partition_id, self.data_root)

    def privacy(self, exp: Experiment) -> PrivacyConfig | None:
        return exp.privacy if self.defended else None

    def local_train(self, ctx: RoundContext, parameters) -> tuple[torch.nn.Module, dict, int]:
        """Train `parameters` on this participant's data for the configured local epochs."""
        model, stats = self.train_on(ctx, ctx.dataset, ctx.indices, parameters)
        return model, stats, len(ctx.indices)

    def train_on(self, ctx: RoundContext, data: BatchDataset, indices: np.ndarray,
                 parameters) -> tuple[torch.nn.Module, dict]:
        """The global model trained on `data[indices]` (with DP-SGD under `privacy`; with
        FedProx's proximal term when the server sent ``proximal_mu``)."""
        exp = ctx.exp
        device = resolve_device(exp.device)
        model = ctx.model()
        set_weights(model, parameters)
        model.to(device)
        optimizer = make_optimizer(model, exp.training)
        set_lr(optimizer, ctx.lr)
        generator = torch.Generator().manual_seed(round_seed(exp.seed, ctx.server_round,
                                                             self.partition_id))
        privacy = self.privacy(exp)
        if privacy is not None and privacy.noise_multiplier is not None:
            return model, self.train_private(exp, data, indices, model, optimizer, device,
                                             generator)
        # FedProx: the local loss gains proximal_mu / 2 * ||w - w_global||^2, w_global the
        # model received this round.
        mu = ctx.proximal_mu
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
        return self.fit_round(self.context(config), parameters)

    def fit_round(self, ctx: RoundContext, parameters):
        """Flower's fit, from the parsed round context."""
        model, stats, n = self.local_train(ctx, parameters)
        weights = get_weights(model)
        privacy = self.privacy(ctx.exp)
        if privacy is not None:
            weights = share_largest(parameters, weights, privacy.share_fraction)
        metrics = {protocol.PARTITION_ID: self.partition_id,
                   **{k: float(v) for k, v in stats.items()}}
        metrics["train_loss"] = metrics.pop("loss")
        metrics["train_accuracy"] = metrics.pop("accuracy")
        return weights, n, metrics
