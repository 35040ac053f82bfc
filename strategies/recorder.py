"""The recorder: writes what the aggregator observes (the global attacker's view) into the
snapshot store, around any Flower strategy.

For every round listed in the config it writes, into the store's "global" view, the model
broadcast (as global round-1), each upload it is handed (kind ``upload``, by partition), each
model sent to one participant alone rather than the broadcast one (kind ``sent``: an isolating
aggregator's), and the new aggregate. Wrapped in the upload gate it is handed the accepted uploads
only. Under SecAgg+ (``keeps_uploads=False``) it keeps no upload: the results it is handed carry
the round's aggregate, which is all the aggregator learns.

A full disk fails the run (``RunState.fail``) instead of crashing Flower's server loop; what was
being written is left as it was (every write is atomic).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

from flwr.common import NDArrays, Parameters
from flwr.server.strategy import Strategy

from fedattack.protocol import FederationFailed
from fedattack.snapshots import GLOBAL_VIEW, Snapshot, SnapshotStore
from strategies.gate import partition_of_result
from strategies.wrapper import RunState, Wrapper, arrays_of

VIEW = GLOBAL_VIEW  # the aggregator's observations


class Recorder(Wrapper):
    """Records the aggregator's observations around ``inner``.

    Args:
        inner: the strategy whose traffic is recorded.
        run: the aggregator's shared state (the binding names the partition of a node sent a
            model of its own; a full disk fails the run).
        store: where observations are written (view "global").
        record_round: which rounds to record.
        weight_names: tensor names of the model, in the order of Flower's parameter list.
        keeps_uploads: False under SecAgg+ (no individual upload exists to keep).
        last_round: the federation's last round. Given, a round's uploads and aggregate are
            written in a thread of their own while the next round trains (the aggregator is
            idle then), at most one round in flight; the last round's are written before
            aggregate_fit returns, so that everything is on disk when the run ends. None: every
            round is written before aggregate_fit returns.
    """

    def __init__(self, inner: Strategy, run: RunState, *, store: SnapshotStore,
                 record_round: Callable[[int], bool], weight_names: list[str],
                 keeps_uploads: bool = True, last_round: int | None = None) -> None:
        super().__init__(inner)
        self.run, self.store, self.record_round = run, store, record_round
        self.weight_names = weight_names
        self.keeps_uploads = keeps_uploads
        self.last_round = last_round
        self._writer: ThreadPoolExecutor | None = None
        self._pending: Future | None = None  # the round being written in the background
        self._pending_keys: set[tuple[str, int, int | None]] = set()
        run.before_failing.append(self.wait_for_writes)

    @contextmanager
    def disk_guard(self):
        """A full disk fails the run instead of crashing Flower's server loop."""
        try:
            yield
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
            self.run.fail(err)

    # -- writing ---------------------------------------------------------------------------

    def record(self, kind: str, server_round: int, weights: NDArrays, partition=None) -> None:
        """Write one observation unless this (kind, round, partition) is already on disk."""
        self.record_many(server_round, [(kind, partition, weights)])

    def record_many(self, server_round: int, observations: list[tuple[str, int | None, NDArrays]],
                    background: bool = False) -> None:
        """Write this round's (kind, partition, weights) observations that are not on disk (or
        on their way) yet, with one manifest write for all of them; `background`: in the writer
        thread, unless this is the last round (see `last_round`)."""
        if not observations:
            return
        done = {(r.kind, r.partition) for r in self.store.records(view=VIEW, round=server_round)}
        done |= {(kind, partition) for kind, at, partition in self._pending_keys
                 if at == server_round}
        batch = [Snapshot(kind, server_round, list(zip(self.weight_names, weights, strict=True)),
                          partition=partition)
                 for kind, partition, weights in observations if (kind, partition) not in done]
        if not batch:
            return
        self.wait_for_writes()  # one round in flight at most, written in order
        if not background or self.last_round is None or server_round >= self.last_round:
            self.store.write_many(VIEW, batch)
            return
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recorder")
        self._pending_keys = {(b.kind, server_round, b.partition) for b in batch}
        self._pending = self._writer.submit(self.store.write_many, VIEW, batch)

    def wait_for_writes(self) -> None:
        """Block until the round written in the background is on disk; its error (a full
        disk) is raised here."""
        pending, self._pending = self._pending, None
        try:
            if pending is not None:
                pending.result()
        finally:
            self._pending_keys = set()

    # -- Flower hooks ----------------------------------------------------------------------

    def configure_fit(self, server_round: int, parameters: Parameters, client_manager):
        """The broadcast model is recorded as global round-1; a model sent to one participant
        instead of it (a wrapper inside replaced it) as that participant's ``sent``."""
        if self.run.failure is not None:
            return []
        with self.disk_guard():
            recording = self.record_round(server_round)
            if recording:
                self.record("global", server_round - 1, arrays_of(parameters))
            instructions = self.inner.configure_fit(server_round, parameters, client_manager)
            if recording:
                for proxy, ins in instructions:
                    partition = self.run.binding.partition_of.get(proxy.cid)
                    if ins.parameters is not parameters and partition is not None:
                        self.record("sent", server_round, arrays_of(ins.parameters),
                                    partition=partition)
            return instructions
        return []

    def aggregate_fit(self, server_round: int, results, failures):
        """Record the uploads and the aggregate of the inner strategy."""
        with self.disk_guard():
            recording = self.record_round(server_round)
            observed = [("upload", partition_of_result(self.run, proxy, res),
                         arrays_of(res.parameters)) for proxy, res in results] \
                if recording and self.keeps_uploads else []
            try:
                parameters, metrics = self.inner.aggregate_fit(server_round, results, failures)
            except FederationFailed:  # the inner strategy produced no model
                self.record_many(server_round, observed)
                raise
            if parameters is None:
                self.record_many(server_round, observed)
                return None, metrics
            if recording:
                observed.append(("global", None, arrays_of(parameters)))
            self.record_many(server_round, observed, background=True)
            if self.last_round is not None and server_round >= self.last_round:
                self.wait_for_writes()  # every round on disk before the run is declared finished
            return parameters, metrics
        return None, {}

    def evaluate(self, server_round: int, parameters: Parameters):
        with self.disk_guard():
            return self.inner.evaluate(server_round, parameters)
        return None
