"""Improved DLG (Zhao et al. 2020): the labels first, from the last layer's update
(fedattack.inversion.labels: the sign rule for one record, counting for a batch), then the
records alone by L-BFGS with DLG's L2 matching.

Knows: the architecture, the broadcast and uploaded weights, the local recipe and the number of
records; not the records; the labels it reads from the update. Threat model: honest-but-curious
server.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from fedattack.inversion.dlg import DLGParams, lbfgs
from fedattack.inversion.registry import HONEST_BUT_CURIOUS, UPDATE_KNOWLEDGE, register

if TYPE_CHECKING:
    import torch

    from fedattack.inversion.core import InversionTarget, Reconstruction


@register("idlg", params=DLGParams, threat_model=HONEST_BUT_CURIOUS,
          knowledge=UPDATE_KNOWLEDGE + "; labels read from the last layer's update",
          description="iDLG (Zhao et al. 2020): labels from the last layer, records by L-BFGS")
def idlg(target: InversionTarget, params: DLGParams,
         device: torch.device | str = "cpu") -> Reconstruction:
    from fedattack.inversion.core import Reconstruction, UpdateMatcher
    from fedattack.inversion.labels import one_hot_labels

    started = time.perf_counter()
    matcher, generator = UpdateMatcher.seeded(target, params.seed, device)
    labels, soft, method = one_hot_labels(target, generator, matcher.device)
    x = matcher.random_records(1, generator).requires_grad_()
    loss, evaluations = lbfgs(lambda: matcher.distances(x, soft, "l2"), [x], params.iterations,
                              params.lr)
    return Reconstruction(x.detach()[0].cpu(), labels, loss, [loss], evaluations,
                          time.perf_counter() - started, method)
