"""The GAN attacker of Hitaj et al.: a participant that reconstructs a class it does not own.

It agrees on the task, the model and the labels, and declares a class of its own (the "fake"
class). Before `gan.start_round` it trains like an honest participant. From then on, each round:
(a) it takes the received global model as the discriminator, (b) trains its generator so that
the model assigns the generator's samples to the victim's class, (c) labels fresh samples with
the fake class and trains the global model on them together with its own real data, (d) uploads.
It never applies the honest participants' privacy defences.

The generator and its Adam state live in the node's ``Context.state`` between rounds. After each
attacked round, the samples of a fixed latent batch go to the attacker's own view of the
snapshot store (kind ``generated``), from which the offline measures are computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from flwr.common import ArrayRecord

from clients.honest import HonestClient, round_seed
from clients.round import RoundContext
from fedattack.config import Experiment
from fedattack.data import Dataset
from fedattack.experiment import SNAPSHOT_DIR
from fedattack.gan import (
    WithGenerated,
    build_generator,
    freeze,
    generate,
    generator_optimizer,
    load_optimizer_tensors,
    optimizer_tensors,
    train_generator,
)
from fedattack.models import Generator
from fedattack.snapshots import GENERATED_KIND, SnapshotStore, local_view
from fedattack.training import set_weights

GENERATOR_STATE = "gan-generator"
OPTIMIZER_STATE = "gan-generator-adam"


def evaluation_noise(generator: Generator, exp: Experiment) -> torch.Tensor:
    """The fixed latent batch whose samples are recorded each round (the same every round)."""
    return generator.noise(exp.gan.eval_samples, torch.Generator().manual_seed(exp.seed))


class GanAttacker(HonestClient):
    """Trains a generator against the global model and poisons it with the fake class."""

    defended = False

    def local_train(self, ctx: RoundContext, parameters) -> tuple[torch.nn.Module, dict, int]:
        exp, dataset, indices = ctx.exp, ctx.dataset, ctx.indices
        if ctx.server_round < exp.gan.start_round:
            return super().local_train(ctx, parameters)
        # A seed apart from the one train_on shuffles with.
        rng = torch.Generator().manual_seed(
            round_seed(exp.seed, ctx.server_round, self.partition_id) + 1)
        generator, optimizer = self.restore_generator(exp, dataset)
        losses = train_generator(generator, self.discriminator(ctx, parameters),
                                 optimizer, exp.gan.victim_class, exp.gan.generator_steps,
                                 exp.gan.generator_batch, rng)
        fakes = generate(generator, generator.noise(exp.gan.samples_per_round, rng))
        self.keep_generator(generator, optimizer)
        self.record_samples(exp, ctx.server_round, generator)
        data = WithGenerated(dataset, fakes, exp.gan.fake_label(dataset.num_classes))
        model, stats = self.train_on(ctx, data, np.concatenate([indices, data.indices()]),
                                     parameters)
        stats = {**stats, "generator_loss_first": losses[0], "generator_loss_last": losses[-1]}
        return model, stats, len(indices)

    @staticmethod
    def discriminator(ctx: RoundContext, parameters) -> torch.nn.Module:
        model = ctx.model()
        set_weights(model, parameters)
        return freeze(model)

    def restore_generator(self, exp: Experiment, dataset: Dataset):
        """The generator and its optimizer as the last round left them (fresh the first time)."""
        generator = build_generator(exp.gan, dataset, exp.seed)
        optimizer = generator_optimizer(generator, exp.gan)
        if GENERATOR_STATE in self.state:
            generator.load_state_dict(self.state[GENERATOR_STATE].to_torch_state_dict())
            load_optimizer_tensors(optimizer, self.state[OPTIMIZER_STATE].to_torch_state_dict())
        return generator, optimizer

    def keep_generator(self, generator: Generator, optimizer: torch.optim.Optimizer) -> None:
        self.state[GENERATOR_STATE] = ArrayRecord(generator.state_dict())
        self.state[OPTIMIZER_STATE] = ArrayRecord(optimizer_tensors(optimizer))

    def record_samples(self, exp: Experiment, server_round: int, generator: Generator) -> None:
        """Write the samples of the fixed latent batch to this participant's view, once."""
        if self.run_dir is None:
            raise ValueError("a GAN attacker needs the run directory (run_config 'run-dir')")
        store = SnapshotStore(Path(self.run_dir) / SNAPSHOT_DIR)
        view = local_view(self.partition_id)
        if not store.records(view=view, kind=GENERATED_KIND, round=server_round):
            samples = generate(generator, evaluation_noise(generator, exp))
            store.write(view, GENERATED_KIND, server_round, {"x": samples})
