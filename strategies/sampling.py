"""Client sampling, seeded: Flower's own sampling with a random generator of the experiment's seed.

Flower's `SimpleClientManager.sample` draws ``random.sample(available, k)`` from the global
`random` module over the nodes in the order they connected, under node ids that are random in
simulation and deployment alike, so the same seed would sample other participants in another run.
`SeededClientManager` draws the same way from a `random.Random(seed)` over the available nodes in
the order of the partition each holds (asked once per node with ``get_properties``, many nodes
at once; the upload checks still hold a node to the partition it first uploaded as), so a seed
names which participants train in each round. When every participant trains, nothing is drawn
and no node is asked anything.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor

from flwr.common import GetPropertiesIns
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.criterion import Criterion

from fedattack.protocol import PARTITION_ID

log = logging.getLogger(__name__)

ASK_AT_ONCE = 64  # questions in flight while the nodes are asked their partitions


class SeededClientManager(SimpleClientManager):
    """A SimpleClientManager whose `sample` is seeded and ordered by partition id."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.rng = random.Random(seed)
        self.partition_of: dict[str, int] = {}  # node id -> the partition it says it holds

    def partition(self, proxy: ClientProxy) -> int:
        """The partition `proxy`'s node holds, asked once; -1 if its answer is unusable (it is
        then drawn like any other node, after the others in order)."""
        if proxy.cid not in self.partition_of:
            try:
                res = proxy.get_properties(GetPropertiesIns({}), timeout=None, group_id=None)
                value = res.properties.get(PARTITION_ID)
                self.partition_of[proxy.cid] = value if isinstance(value, int) else -1
            except Exception as err:  # a node that cannot answer still takes part
                log.warning("node %s did not say its partition: %s", proxy.cid, err)
                self.partition_of[proxy.cid] = -1
        return self.partition_of[proxy.cid]

    def ask(self, proxies: list[ClientProxy]) -> None:
        """Ask these nodes their partitions at once (ASK_AT_ONCE at a time): one question after
        another would cost one message round trip per node, minutes for 1,000 nodes."""
        if not proxies:
            return
        with ThreadPoolExecutor(max_workers=min(ASK_AT_ONCE, len(proxies))) as pool:
            list(pool.map(self.partition, proxies))

    def sample(self, num_clients: int, min_num_clients: int | None = None,
               criterion: Criterion | None = None) -> list[ClientProxy]:
        if min_num_clients is None:
            min_num_clients = num_clients
        self.wait_for(min_num_clients)
        available = [cid for cid in self.clients
                     if criterion is None or criterion.select(self.clients[cid])]
        if num_clients > len(available):
            log.info("sampling failed: %d clients available, %d requested", len(available),
                     num_clients)
            return []
        if num_clients == len(available):
            return [self.clients[cid] for cid in available]
        self.ask([self.clients[cid] for cid in available if cid not in self.partition_of])

        def order(cid: str) -> tuple[int, str]:
            pid = self.partition(self.clients[cid])
            return (pid if pid >= 0 else len(self.clients), cid)

        ordered = sorted(available, key=order)
        return [self.clients[cid] for cid in self.rng.sample(ordered, num_clients)]
