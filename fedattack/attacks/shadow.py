"""Shokri et al.'s shadow-model attack in Nasr et al.'s white-box form (Table VI): shadow models
of the target's architecture, trained like the target on the attacker's own shadow data (half in,
half out); the attack network is trained on their features and applied to the target's.

Reads: `data.shadow_size` records of the attacker's own (never a victim's member) and the
observed stand-alone model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedattack.attack_registry import AttackOutcome, register

# torch and the training loop are imported where used (see whitebox.py).
if TYPE_CHECKING:
    import torch


def check(exp) -> None:
    if exp.data.shadow_size < 4:
        raise ValueError(f"needs data.shadow_size >= 4 records (got {exp.data.shadow_size})")


@register("shadow", knowledge="shadow", reads_features=True, scenarios=("standalone",),
          check=check, description="the white-box attack network trained on shadow models "
          "(Shokri et al.) and applied to the target model")
def run_shadow(ctx) -> AttackOutcome:
    shadow = ctx.knowledge.shadow
    if len(shadow) < 4:
        raise ValueError("the shadow attack needs data.shadow_size >= 4 records")
    rng = np.random.default_rng(ctx.seed + 7)
    members, nonmembers, member_loss, nonmember_loss, ins, outs = [], [], [], [], [], []
    for s in range(ctx.cfg.shadow_models):
        order = rng.permutation(shadow)
        s_in, s_out = np.sort(order[: len(order) // 2]), np.sort(order[len(order) // 2:])
        model = train_shadow(ctx, s, s_in, s_out)
        members.append(ctx.features(f"shadow{s}-in", ctx.spec, s_in, [model]))
        nonmembers.append(ctx.features(f"shadow{s}-out", ctx.spec, s_out, [model]))
        ins.append(s_in)
        outs.append(s_out)
        member_loss.append(ctx.loss_scores(s_in, [model]))
        nonmember_loss.append(ctx.loss_scores(s_out, [model]))
    reference = (np.concatenate(member_loss), np.concatenate(nonmember_loss))
    ins, outs = np.concatenate(ins), np.concatenate(outs)
    attack = ctx.whitebox_attack("shadow").fit(
        ConcatSource(members), ConcatSource(nonmembers), reference=reference,
        classes=ctx.classes(ins, outs))
    targets = ctx.features("shadow-targets", ctx.spec, ctx.knowledge.targets)
    return AttackOutcome("shadow", ctx.describe(ctx.spec), attack.decision_function(targets),
                         threshold=0.0, training=ctx.training_record(attack))


def train_shadow(ctx, s: int, s_in: np.ndarray, s_out: np.ndarray) -> torch.nn.Module:
    """Shadow model `s`: the target's architecture and recipe, on `s_in` (`s_out` held out)."""
    from fedattack.training import train_model

    ctx.log(f"  shadow model {s}: training on {len(s_in)} records")
    seed = ctx.seed + 1000 + s
    model = ctx.target.build(seed).to(ctx.device)
    train_model(model, ctx.dataset, s_in, s_out, ctx.target.training, ctx.target.training.epochs,
                ctx.device, seed)
    return model.cpu()


class ConcatSource:
    """Several feature sources seen as one (the shadow models' features, concatenated)."""

    def __init__(self, sources) -> None:
        self.sources = list(sources)
        self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def shapes(self):
        return self.sources[0].shapes()

    def take(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        rows = np.asarray(rows)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        parts, order = [], []
        for i, src in enumerate(self.sources):
            sel = np.nonzero(which == i)[0]
            if len(sel):
                parts.append(src.take(rows[sel] - self.offsets[i]))
                order.append(sel)
        inverse = np.argsort(np.concatenate(order))
        import torch

        return {k: torch.cat([p[k] for p in parts])[inverse] for k in parts[0]}

    def batches(self, order=None, batch_size: int = 256):
        order = np.arange(len(self)) if order is None else np.asarray(order)
        for start in range(0, len(order), batch_size):
            yield self.take(order[start:start + batch_size])
