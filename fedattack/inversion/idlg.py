"""Improved DLG (Zhao et al. 2020): the labels first, from the last layer's update
(fedattack.inversion.labels: the sign rule for one record, counting for a batch), then the
records alone by L-BFGS with DLG's L2 matching.

Knows: the architecture, the broadcast and uploaded weights, the local recipe and the number of
records; not the records; the labels it reads from the update. Threat model: honest-but-curious
server.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from fedattack.inversion.core import InversionTarget, Reconstruction, UpdateMatcher
from fedattack.inversion.dlg import DLGParams, lbfgs
from fedattack.inversion.labels import recover_labels
from fedattack.inversion.registry import HONEST_BUT_CURIOUS, UPDATE_KNOWLEDGE, register


@register("idlg", params=DLGParams, threat_model=HONEST_BUT_CURIOUS,
          knowledge=UPDATE_KNOWLEDGE + "; labels read from the last layer's update",
          description="iDLG (Zhao et al. 2020): labels from the last layer, records by L-BFGS")
def idlg(target: InversionTarget, params: DLGParams,
         device: torch.device | str = "cpu") -> Reconstruction:
    started = time.perf_counter()
    matcher = UpdateMatcher(target, device)
    generator = torch.Generator().manual_seed(params.seed)
    labels, method = recover_labels(target, generator)
    soft = F.one_hot(labels, target.num_classes).float().to(matcher.device)
    x = matcher.random_records(1, generator).requires_grad_()
    loss, evaluations = lbfgs(lambda: matcher.distances(x, soft, "l2"), [x], params.iterations,
                              params.lr)
    return Reconstruction(x.detach()[0].cpu(), labels, loss, [loss], evaluations,
                          time.perf_counter() - started, method)
