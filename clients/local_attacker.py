"""The malicious participant: the local attacker of Nasr et al. (Sections II-B, IV-D/E).

It follows the protocol on its own data, and at the observed rounds writes the global model it
received into its own view of the snapshot store (``local-<partition>``, kind ``sent``, the model
sent to it in that round): that is all a local attacker ever sees. Active, it uploads its locally
trained model moved up the loss on the target records (eq. 2), by a step relative to its own
round's update (``W_local`` minus the model it received) or by the paper's absolute ``gamma *
dL/dW``, so that the other participants' SGD pulls the loss of their member targets back down
while non-member targets keep rising.

What it observed is also kept in the node's ``Context.state`` (round and sha256 of each model),
which Flower keeps between rounds, so the attacker knows across rounds what it has already seen.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from flwr.common import ConfigRecord

from clients.honest import HonestClient, experiment_setup
from fedattack import protocol
from fedattack.active import GradientAscent, ascent_for
from fedattack.data import knowledge_of
from fedattack.experiment import SNAPSHOT_DIR, initial_model
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

    def fit(self, parameters, config):
        exp, dataset, _ = self.setup(config)
        server_round = int(config[protocol.SERVER_ROUND])
        if exp.federation.records(server_round):
            self.observe(exp, dataset, server_round, parameters)
        weights, n, metrics = super().fit(parameters, config)
        if exp.attacker.ascends(server_round):
            splits = experiment_setup(str(config[protocol.EXPERIMENT]), self.data_root)[2]
            weights = self.ascent(exp, dataset, splits)(weights, parameters)
        return weights, n, metrics

    def observe(self, exp, dataset, server_round: int, parameters) -> None:
        """Write the received global model to this participant's view, once per round."""
        if self.run_dir is None:
            raise ValueError("a local attacker needs the run directory (run_config 'run-dir')")
        seen = self.observations()
        if server_round in seen["rounds"]:
            return
        store = SnapshotStore(Path(self.run_dir) / SNAPSHOT_DIR)
        view = local_view(self.partition_id)
        if not store.records(view=view, kind="sent", round=server_round):
            names = weight_names(initial_model(exp, dataset))
            store.write(view, "sent", server_round, list(zip(names, parameters, strict=True)),
                        partition=self.partition_id)
        self.state[STATE_KEY] = ConfigRecord({
            "rounds": [*seen["rounds"], server_round],
            "sha256": [*seen["sha256"], weights_digest(parameters)],
        })

    def observations(self) -> dict[str, list]:
        """Rounds and sha256 of the global models observed so far (from the node's state)."""
        if STATE_KEY not in self.state:
            return {"rounds": [], "sha256": []}
        record = self.state[STATE_KEY]
        return {"rounds": list(record["rounds"]), "sha256": list(record["sha256"])}

    def ascent(self, exp, dataset, splits) -> GradientAscent:
        """Eq. 2 on the targets this attacker may know of (unlabelled, from its knowledge);
        ``splits`` are the experiment's, computed once per process by ``experiment_setup``."""
        targets = knowledge_of(splits, splits.victims[0].name).targets
        x, y = dataset.batch(targets)
        return ascent_for(initial_model(exp, dataset), x, y, exp.attacker)

