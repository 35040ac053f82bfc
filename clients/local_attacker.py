"""The malicious participant: the local attacker of Nasr et al. (Sections II-B, IV-D/E).

It follows the protocol on its own data, and at the observed rounds writes the global model it
received into its own view of the snapshot store (``local-<partition>``, kind ``sent``, the model
sent to it in that round): that is all a local attacker ever sees. Active, it uploads its locally
trained model moved up the loss on the target records and on its known records (eq. 2; see
fedattack.active for why the known records too), by a step relative to its own round's update
(``W_local`` minus the model it received) or by the paper's absolute ``gamma * dL/dW``, so that
the other participants' SGD pulls the loss of their member targets back down while non-member
targets keep rising.

What it observed is also kept in the node's ``Context.state`` (round and sha256 of each model),
which Flower keeps between rounds, so the attacker knows across rounds what it has already seen.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from flwr.common import ConfigRecord

from clients.honest import HonestClient
from clients.round import RoundContext
from fedattack.active import GradientAscent, ascended_records, ascent_for
from fedattack.data import knowledge_of
from fedattack.experiment import SNAPSHOT_DIR
from fedattack.snapshots import SnapshotStore, local_view
from fedattack.training import weight_names

STATE_KEY = "local-attacker"


def weights_digest(weights: list[np.ndarray]) -> str:
    digest = hashlib.sha256()
    for w in weights:
        digest.update(np.ascontiguousarray(w).tobytes())
    return digest.hexdigest()


class LocalAttacker(HonestClient):
    """Trains like an honest participant; records what it receives; ascends when active."""

    def fit_round(self, ctx: RoundContext, parameters):
        if ctx.exp.federation.records(ctx.server_round):
            self.observe(ctx, parameters)
        weights, n, metrics = super().fit_round(ctx, parameters)
        if ctx.exp.attacker.ascends(ctx.server_round):
            weights = self.ascent(ctx)(weights, parameters)
        return weights, n, metrics

    def observe(self, ctx: RoundContext, parameters) -> None:
        """Write the received global model to this participant's view, once per round."""
        if self.run_dir is None:
            raise ValueError("a local attacker needs the run directory (run_config 'run-dir')")
        seen = self.observations()
        if ctx.server_round in seen["rounds"]:
            return
        store = SnapshotStore(Path(self.run_dir) / SNAPSHOT_DIR)
        view = local_view(self.partition_id)
        if not store.records(view=view, kind="sent", round=ctx.server_round):
            names = weight_names(ctx.model())
            store.write(view, "sent", ctx.server_round,
                        list(zip(names, parameters, strict=True)), partition=self.partition_id)
        self.state[STATE_KEY] = ConfigRecord({
            "rounds": [*seen["rounds"], ctx.server_round],
            "sha256": [*seen["sha256"], weights_digest(parameters)],
        })

    def observations(self) -> dict[str, list]:
        """Rounds and sha256 of the global models observed so far (from the node's state)."""
        if STATE_KEY not in self.state:
            return {"rounds": [], "sha256": []}
        record = self.state[STATE_KEY]
        return {"rounds": list(record["rounds"]), "sha256": list(record["sha256"])}

    @staticmethod
    def ascent(ctx: RoundContext) -> GradientAscent:
        """Eq. 2 on the targets and the known records of this attacker's victim, in one batch
        (fedattack.active.ascended_records: no membership label reaches it)."""
        records = ascended_records([knowledge_of(ctx.splits, ctx.splits.victims[0].name)])
        x, y = ctx.dataset.batch(records)
        return ascent_for(ctx.model(), x, y, ctx.exp.attacker)
