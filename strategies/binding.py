"""Which node holds which partition: bound once, before the node is sent any work, and never
contested by what the node uploads afterwards.

A node is asked the partition it holds (``get_properties``, answered by the ClientApp from the
``partition-id`` of its node_config: clients/client_app.py) the first time the aggregator sees
it, in the ``configure_fit`` of the round it is first connected in, before the round's fit
instructions go out; under full participation that is every node, in round 1, before any
training. From then on an upload is accepted only if the partition it claims in its fit metrics
is the one its node is bound to: a participant that claims another's partition is refused, and
the owner of that partition is aggregated as usual (issue 25, items 1 and 2). The partition
claimed in the metrics is therefore a consistency check, no longer the source of truth.

What the binding rests on:

- **In simulation**, Flower's simulation engine gives virtual node *i* the node_config
  ``partition-id = i`` and a random node id; a participant chooses neither, and the ClientApp
  answers from that node_config. The binding is as trustworthy as the ClientApp's answer to this
  one question: the testbed's hostile participants (tests/hostile_participants.py) damage their
  uploads, the threat model's, not the ClientApp's properties.
- **In a deployment**, the node_config is what the operator gave each SuperNode at launch
  (``--node-config "partition-id=..."``: fedattack.deploy), and with SuperNode authentication
  (Flower's ``--auth-supernode-private-key``/``public-key``, the SuperLink's list of allowed
  keys) a node id belongs to one key: no node can answer, or upload, as another node id. The
  binding then says "the node the operator registered under this key holds this partition". A
  participant that controls its own SuperNode can still lie about its partition at binding
  time; it then collides with the honest owner (next point) or takes an unheld partition
  (which an operator sees in run.json's ``binding``). Without SuperNode authentication a node id
  proves nothing and neither does the binding.

Collisions are settled at binding time, never by uploads: a node that claims a partition bound
to a node still connected is left unbound (every upload of it refused, saying whose partition it
claimed); two nodes that claim the same unbound partition in the same question fail the run
before either trains (`BindingConflict`: the operator must give each node its own partition). A
node that claims a partition whose node is no longer connected takes it over (a SuperNode that
reconnected under a new node id). A node whose answer is unusable stays unbound.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from flwr.common import GetPropertiesIns
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy

from fedattack.protocol import PARTITION_ID, FederationFailed

log = logging.getLogger(__name__)

ASK_AT_ONCE = 64  # questions in flight while the nodes are asked their partitions


class BindingConflict(FederationFailed):
    """Two nodes claim the same partition before either trained."""


def ask_partition(proxy: ClientProxy) -> object:
    """The partition `proxy`'s node says it holds (its node_config's), or the error's text."""
    try:
        res = proxy.get_properties(GetPropertiesIns({}), timeout=None, group_id=None)
    except Exception as err:  # a node that cannot answer is left unbound
        return f"no answer ({type(err).__name__}: {err})"
    return res.properties.get(PARTITION_ID)


class PartitionBinding:
    """Node id -> partition id, bound once per node (see the module docstring).

    Args:
        num_partitions: the partitions of the federation (ids 0..num_partitions-1).
    """

    def __init__(self, num_partitions: int) -> None:
        self.num_partitions = int(num_partitions)
        self.partition_of: dict[str, int] = {}  # node id -> the partition it is bound to
        self.node_of: dict[int, str] = {}  # partition id -> the node bound to it
        self.unbound: dict[str, str] = {}  # node id -> why it holds no partition

    def bind_new(self, client_manager: ClientManager,
                 also: Iterable[ClientProxy] = ()) -> None:
        """Ask every node of `client_manager` (and `also`) not asked yet, and bind it."""
        proxies = {p.cid: p for p in [*client_manager.all().values(), *also]}
        new = [p for cid, p in proxies.items()
               if cid not in self.partition_of and cid not in self.unbound]
        if not new:
            return
        answers = self.answers(client_manager, new)
        self.settle(answers, connected=set(proxies))

    def answers(self, client_manager: ClientManager, proxies: list[ClientProxy]) -> dict:
        """node id -> its answer; a client manager that already asked (strategies.sampling's)
        is reused, so no node is asked twice."""
        known = getattr(client_manager, "partition_of", None)
        ask = getattr(client_manager, "ask", None)
        if isinstance(known, dict) and callable(ask):
            ask([p for p in proxies if p.cid not in known])
            return {p.cid: known.get(p.cid) for p in proxies}
        with ThreadPoolExecutor(max_workers=min(ASK_AT_ONCE, len(proxies))) as pool:
            return dict(zip([p.cid for p in proxies], pool.map(ask_partition, proxies),
                            strict=True))

    def settle(self, answers: dict[str, object], connected: set[str]) -> None:
        """Bind each answering node (node id -> answer); see the module docstring."""
        claims: dict[int, list[str]] = {}
        for node, answer in sorted(answers.items()):
            if (not isinstance(answer, int) or isinstance(answer, bool)
                    or not 0 <= answer < self.num_partitions):
                why = answer if isinstance(answer, str) and answer.startswith("no answer") \
                    else f"said it holds partition {answer!r}, not one of " \
                         f"0..{self.num_partitions - 1}"
                self.leave_unbound(node, why)
                continue
            claims.setdefault(answer, []).append(node)
        for pid, nodes in sorted(claims.items()):
            if len(nodes) > 1:
                raise BindingConflict(
                    f"nodes {', '.join(nodes)} all say they hold partition {pid} (their "
                    "node_config's partition-id): give each node its own partition")
            (node,) = nodes
            holder = self.node_of.get(pid)
            if holder is not None and holder in connected:
                self.leave_unbound(node, f"it says it holds partition {pid}, which node "
                                         f"{holder} was bound to first")
                continue
            if holder is not None:
                log.warning("partition %d: node %s takes over from node %s, no longer "
                            "connected", pid, node, holder)
                self.partition_of.pop(holder, None)
            self.node_of[pid] = node
            self.partition_of[node] = pid

    def leave_unbound(self, node: str, why: str) -> None:
        log.warning("node %s is bound to no partition: %s", node, why)
        self.unbound[node] = why

    def check(self, node: str, claimed: int) -> None:
        """ValueError unless `node` is bound to partition `claimed`."""
        bound = self.partition_of.get(node)
        if bound is None:
            why = self.unbound.get(node, "it was not connected when the partitions were bound")
            raise ValueError(f"claims partition {claimed}, but this node holds none ({why})")
        if bound != claimed:
            owner = self.node_of.get(claimed)
            whose = f"node {owner}'s" if owner is not None else "bound to no node"
            raise ValueError(f"claims partition {claimed} ({whose}), but this node is bound to "
                             f"partition {bound}")

    def as_record(self) -> dict[str, int]:
        """partition id (as a string) -> node id, for run.json."""
        return {str(pid): node for pid, node in sorted(self.node_of.items())}
