"""Client-level DP (McMahan et al. 2018, Andrew et al. 2021): Flower's DP strategy wrappers,
server- or client-side clipping, fixed or adaptive."""

from fedattack.defences.base import AGGREGATOR, PARTICIPANT, Defence


def _label(exp) -> str:
    dp = exp.federation.client_dp
    return f"client DP ({dp.clipping}) z={dp.noise_multiplier:g} C={dp.clipping_norm:g}"


DEFENCE = Defence(
    name="client-level DP",
    key="federation.client_dp",
    what="Flower's DP wrappers: updates clipped (server-fixed, client-fixed, server-adaptive, "
         "client-adaptive) and the average noised",
    active=lambda exp: exp.federation.client_dp is not None,
    label=_label,
    hides={AGGREGATOR: "with client-side clipping, the part of an update beyond the clipping "
                       "norm (the noise is added after aggregation: each clipped upload is seen); "
                       "with server-side clipping, nothing (the aggregator clips what it sees)",
           PARTICIPANT: "any one participant's contribution to the global models it receives, "
                        "to the accountant's epsilon"},
    server="strategies.client_dp:client_dp",
    client="clients.client_app:client_clipping_mod",
)
