"""Hostile participants for real Flower simulations: an honest participant whose upload is then
damaged, per (partition, round), as a participant under an attacker's control could send it.

The simulation loads its ClientApp by name (fedattack.simulation.CLIENT_APP_FACTORY); a test
points that name at a factory here, and the Ray workers import this module to build the clients.
"""

from __future__ import annotations

import numpy as np
from flwr.client import ClientApp
from flwr.common import Context

from clients.client_app import Participant, client_clipping_mod, secure_aggregation_mod
from fedattack import protocol


def damage(case: str, weights, n: int, metrics: dict):
    """The upload (weights, num_examples, metrics) damaged as `case` says."""
    weights, metrics = [w.copy() for w in weights], dict(metrics)
    if case == "negative-partition":
        metrics[protocol.PARTITION_ID] = -1
    elif case == "out-of-range-partition":
        metrics[protocol.PARTITION_ID] = 99
    elif case == "string-partition":
        metrics[protocol.PARTITION_ID] = str(metrics[protocol.PARTITION_ID])
    elif case == "no-partition":
        del metrics[protocol.PARTITION_ID]
    elif case.startswith("claims-partition-"):  # another participant's partition
        metrics[protocol.PARTITION_ID] = int(case.removeprefix("claims-partition-"))
    elif case == "negative-examples":
        n = -1_000_000
    elif case == "absurd-examples":
        n = 10**9
    elif case == "extra-metric":
        metrics["exfiltrated"] = 1.0
    elif case == "missing-metric":
        del metrics["train_loss"]
    elif case == "nan-weights":
        weights[0][...] = np.nan
    elif case == "inf-weights":
        [w for w in weights if w.dtype.kind == "f"][-1][...] = np.inf
    elif case == "float64-weights":
        weights = [w.astype(np.float64) if w.dtype.kind == "f" else w for w in weights]
    elif case == "wrong-shape":
        weights[0] = weights[0][:1]
    elif case == "transposed":  # the first matrix transposed (issue 25, item 4)
        weights[0] = np.ascontiguousarray(weights[0].T)
    elif case == "raises":
        raise RuntimeError("hostile participant crashed on purpose")
    elif case != "honest":
        raise AssertionError(f"unknown case {case!r}")
    return weights, n, metrics


# (partition, round) -> case; absent: honest. Partition 0 stays honest throughout.
MIXED = {
    (1, 1): "negative-partition", (1, 2): "negative-examples", (1, 3): "extra-metric",
    (2, 1): "nan-weights", (2, 2): "claims-partition-0", (2, 3): "float64-weights",
    (3, 1): "string-partition", (3, 2): "absurd-examples", (3, 3): "missing-metric",
    (4, 1): "out-of-range-partition", (4, 2): "inf-weights", (4, 3): "raises",
}
ALL_BAD_IN_ROUND_2 = {(0, 2): "nan-weights", (1, 2): "out-of-range-partition",
                      (2, 2): "absurd-examples"}


class HostileParticipant(Participant):
    cases: dict[tuple[int, int], str] = {}

    def fit(self, parameters, config):
        weights, n, metrics = super().fit(parameters, config)
        case = self.cases.get((self.partition_id, int(config[protocol.SERVER_ROUND])), "honest")
        return damage(case, weights, n, metrics)


def hostile_client_app(cases: dict, overrides: dict | None) -> ClientApp:
    class Hostile(HostileParticipant):
        pass

    Hostile.cases = cases

    def client_fn(context: Context):
        run_config = {**context.run_config, **(overrides or {})}
        threads = run_config.get(protocol.CLIENT_THREADS)
        return Hostile(int(context.node_config["partition-id"]), None,
                       int(threads) if threads else None, context.state,
                       str(run_config[protocol.RUN_DIR])).to_client()

    return ClientApp(client_fn=client_fn, mods=[secure_aggregation_mod, client_clipping_mod])


# participant 1 claims partition 3 in every round (issue 25, item 1: under client sampling)
IMPOSTOR_OF_3 = {(1, r): "claims-partition-3" for r in range(1, 11)}
# participant 1 claims partition 2 in every round (item 2: the owner must not be excluded)
LIAR_ABOUT_2 = {(1, r): "claims-partition-2" for r in range(1, 11)}


def make_impostor_client_app(overrides: dict | None = None) -> ClientApp:
    return hostile_client_app(IMPOSTOR_OF_3, overrides)


def make_liar_client_app(overrides: dict | None = None) -> ClientApp:
    return hostile_client_app(LIAR_ABOUT_2, overrides)


# under SecAgg+: round 1, participant 1's masked vector is of the wrong shape; round 2, two of
# three participants fail, too few for the protocol's threshold (issue 25, items 3 and 4)
SECAGG_BREAKERS = {(1, 1): "transposed", (1, 2): "raises", (2, 2): "raises"}


def make_secagg_breaker_client_app(overrides: dict | None = None) -> ClientApp:
    return hostile_client_app(SECAGG_BREAKERS, overrides)


def make_mixed_client_app(overrides: dict | None = None) -> ClientApp:
    return hostile_client_app(MIXED, overrides)


def make_all_bad_client_app(overrides: dict | None = None) -> ClientApp:
    return hostile_client_app(ALL_BAD_IN_ROUND_2, overrides)
