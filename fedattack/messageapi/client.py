"""ClientApp mods for a user's Message-API app (``ClientApp(mods=[...])``).

- :func:`partition_mod`: puts the partition the node holds (``node_config["partition-id"]``, the
  id the app's own ``load_data`` reads) into its train reply's metrics as ``partition-id``, which
  the server's UploadGate checks and binds the node to.
- :func:`malicious_participant_mod`: on the node that the audit YAML names as the local attacker
  (``attacker: {kind: local, participant: P}``), writes every global model it receives at a
  recorded round into its own view of the snapshot store (``local-P``, kind ``sent``): all a
  participant ever observes, what "what could one of my participants learn" is attacked from.
  Active (``mode: gradient-ascent``), it also moves its upload up the loss of its target and known
  records (fedattack.active, eq. 2), relative to its own round's update. On every other node it
  does nothing.

Order: ``ClientApp(mods=[partition_mod, malicious_participant_mod])``. A mod listed first wraps
the ones after it; with Flower's ``fixedclipping_mod`` last (the innermost), the malicious
participant's ascended upload is clipped like anyone's. The malicious participant records what it
*receives*, which no client mod changes.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path

import numpy as np
from flwr.app import Context, Message, MessageType
from flwr.clientapp.typing import ClientAppCallable

from fedattack.messageapi.audit import AUDIT_RUN_DIR
from fedattack.messageapi.server import PARTITION_METRIC, as_record

log = logging.getLogger(__name__)

PARTITION_ID = "partition-id"  # node_config: the partition a simulated node holds


def partition_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """The train reply's metrics with the node's partition id (see the module docstring)."""
    reply = call_next(msg, ctxt)
    if msg.metadata.message_type != MessageType.TRAIN or reply.has_error():
        return reply
    pid = ctxt.node_config.get(PARTITION_ID)
    if pid is None:  # the gate refuses the reply, saying that no partition was claimed
        log.warning("partition_mod: node_config has no %r: the reply claims no partition",
                    PARTITION_ID)
        return reply
    for metrics in reply.content.metric_records.values():
        metrics[PARTITION_METRIC] = int(pid)
    return reply


class Participant:
    """What the malicious participant of an audited run knows: the experiment, its run
    directory, its partition, and (active) its ascent."""

    def __init__(self, run_dir: Path, partition: int) -> None:
        from fedattack.config import load_experiment
        from fedattack.experiment import CONFIG_FILE, SNAPSHOT_DIR
        from fedattack.snapshots import SnapshotStore, local_view

        self.exp = load_experiment(run_dir / CONFIG_FILE)
        self.partition = partition
        self.store = SnapshotStore(run_dir / SNAPSHOT_DIR)
        self.view = local_view(partition)
        self._ascent = None

    @property
    def attacking(self) -> bool:
        a = self.exp.attacker
        return a is not None and a.kind == "local" and a.participant == self.partition

    def observe(self, server_round: int, names: list[str], arrays: list[np.ndarray]) -> None:
        """Write the received model into this participant's view, once per round."""
        if not self.exp.federation.records(server_round):
            return
        if self.store.records(view=self.view, kind="sent", round=server_round):
            return
        self.store.write(self.view, "sent", server_round, list(zip(names, arrays, strict=True)),
                         partition=self.partition)

    def ascent(self):
        """Eq. 2 on its victim's targets and its known records (fedattack.active)."""
        if self._ascent is None:
            from fedattack.active import ascended_records, ascent_for
            from fedattack.data import knowledge_of
            from fedattack.experiment import experiment_dataset, experiment_splits, initial_model

            dataset = experiment_dataset(self.exp)
            splits = experiment_splits(self.exp, dataset)
            records = ascended_records([knowledge_of(splits, splits.victims[0].name)])
            x, y = dataset.batch(records)
            self._ascent = ascent_for(initial_model(self.exp, dataset), x, y, self.exp.attacker)
        return self._ascent


@lru_cache(maxsize=4)
def _participant(run_dir: str, partition: int, _config_mtime: int) -> Participant:
    return Participant(Path(run_dir), partition)


def participant_of(ctxt: Context) -> Participant | None:
    """This node as the audit's malicious participant, or None if it is not the attacker (or no
    audited run is configured)."""
    run_dir, pid = ctxt.run_config.get(AUDIT_RUN_DIR), ctxt.node_config.get(PARTITION_ID)
    if run_dir is None or pid is None:
        return None
    from fedattack.experiment import CONFIG_FILE

    config = Path(str(run_dir)) / CONFIG_FILE
    if not config.exists():
        raise FileNotFoundError(f"malicious_participant_mod: {config} is missing: the ServerApp "
                                "(fedattack.messageapi.audited) writes it before round 1")
    held = _participant(str(Path(str(run_dir)).resolve()), int(pid), config.stat().st_mtime_ns)
    return held if held.attacking else None


def _round(msg: Message) -> int:
    for config in msg.content.config_records.values():
        if "server-round" in config:
            return int(config["server-round"])
    raise ValueError("malicious_participant_mod: the train message carries no 'server-round' "
                     "(every flwr.serverapp.strategy sends it)")


def malicious_participant_mod(msg: Message, ctxt: Context,
                              call_next: ClientAppCallable) -> Message:
    """Records what the audit's malicious participant receives (see the module docstring)."""
    if msg.metadata.message_type != MessageType.TRAIN:
        return call_next(msg, ctxt)
    me = participant_of(ctxt)
    if me is None:
        return call_next(msg, ctxt)
    server_round = _round(msg)
    (received,) = msg.content.array_records.values()
    names = list(received.keys())
    start = [received[n].numpy() for n in names]
    me.observe(server_round, names, start)
    reply = call_next(msg, ctxt)
    if reply.has_error() or not me.exp.attacker.ascends(server_round):
        return reply
    (key, upload), = reply.content.array_records.items()
    weights = [upload[n].numpy() for n in names]
    moved = me.ascent()(weights, start)
    reply.content.array_records[key] = as_record(
        names, [m.astype(w.dtype) for m, w in zip(moved, weights, strict=True)])
    return reply
