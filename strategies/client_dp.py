"""Client-level DP (``federation.client_dp``) with Flower's own DP strategy wrappers.

Fixed clipping is Flower's ``DifferentialPrivacyServerSideFixedClipping`` and
``DifferentialPrivacyClientSideFixedClipping`` as they are. Adaptive clipping is Flower's
``...AdaptiveClipping`` wrappers (their configuration, the split of the noise between the update
and the clipped-count query, the clients' ``adaptiveclipping_mod``) with their round corrected in
two places where Flower 1.42 departs from Andrew et al. (2021):

- the noise added to a round's average is calibrated to the norm the round's updates were clipped
  to; Flower updates the norm first and calibrates the noise to the *next* round's norm, so a
  shrinking norm adds less noise than the clip the accountant assumes;
- the norm grows when more updates than ``target_clipped_quantile`` were clipped (and shrinks
  when fewer were); Flower's geometric step has the opposite sign (its ``norm_bit`` marks a
  clipped update, Andrew et al.'s an unclipped one), which drives the norm to 0 once most updates
  are clipped (measured: tests/test_client_dp.py).
"""

from __future__ import annotations

import math

import numpy as np
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import (
    KEY_NORM_BIT,
    adaptive_clip_inputs_inplace,
    add_gaussian_noise_to_params,
)

from fedattack.config import Experiment
from strategies.wrapper import Wrapper


class _AdaptiveRound:
    """The corrected adaptive-clipping round, shared by the server- and client-side wrappers."""

    clipping_norm: float
    clip_norm_lr: float
    target_clipped_quantile: float
    clipped_count_stddev: float
    noise_multiplier: float
    num_sampled_clients: int
    strategy: Strategy

    def noised_average(self, server_round, results, clip: float):
        parameters, metrics = self.strategy.aggregate_fit(server_round, results, [])
        if parameters is not None:
            parameters = add_gaussian_noise_to_params(parameters, self.noise_multiplier, clip,
                                                      self.num_sampled_clients)
        return parameters, metrics

    def next_norm(self, clip: float, clipped: int, total: int) -> float:
        """Andrew et al.'s geometric step, on the noised fraction of clipped updates."""
        noised = float(np.random.normal(clipped, self.clipped_count_stddev)) / total
        return clip * math.exp(self.clip_norm_lr * (noised - self.target_clipped_quantile))


class ServerSideAdaptiveClipping(_AdaptiveRound, DifferentialPrivacyServerSideAdaptiveClipping):
    """Flower's server-side adaptive clipping, its round corrected (module docstring)."""

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
        failures: list,
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if failures or not results:
            return None, {}
        clip, clipped = self.clipping_norm, 0
        for _, res in results:
            weights = parameters_to_ndarrays(res.parameters)
            update = [np.subtract(w, s) for w, s in
                      zip(weights, self.current_round_params, strict=True)]
            clipped += bool(adaptive_clip_inputs_inplace(update, clip))
            res.parameters = ndarrays_to_parameters(
                [s + u for s, u in zip(self.current_round_params, update, strict=True)])
        aggregate = self.noised_average(server_round, results, clip)
        self.clipping_norm = self.next_norm(clip, clipped, len(results))
        return aggregate


class ClientSideAdaptiveClipping(_AdaptiveRound, DifferentialPrivacyClientSideAdaptiveClipping):
    """Flower's client-side adaptive clipping (the clients' ``adaptiveclipping_mod`` clips to
    the norm sent with the round and reports whether it clipped), its round corrected."""

    def aggregate_fit(
        self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
        failures: list,
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if failures or not results:
            return None, {}
        missing = [proxy.cid for proxy, res in results if KEY_NORM_BIT not in res.metrics]
        if missing:
            raise KeyError(f"{KEY_NORM_BIT} not returned by clients {missing}")
        clip = self.clipping_norm  # what configure_fit sent this round's clients
        clipped = sum(bool(res.metrics[KEY_NORM_BIT]) for _, res in results)
        aggregate = self.noised_average(server_round, results, clip)
        self.clipping_norm = self.next_norm(clip, clipped, len(results))
        return aggregate


class UniformWeights(Wrapper):
    """Client-level DP's weighting, around Flower's DP wrapper: every upload weighs 1 in the
    average (one participant moves it by at most clip / sampled), and numpy's global generator,
    from which Flower's DP wrappers draw their noise, is seeded per round from ``noise_seed`` (so
    the same seed gives the same run; None: untouched)."""

    def __init__(self, inner: Strategy, *, uniform: bool = True,
                 noise_seed: int | None = None) -> None:
        super().__init__(inner)
        self.uniform, self.noise_seed = uniform, noise_seed

    def aggregate_fit(self, server_round, results, failures):
        if self.uniform:
            results = [(proxy, FitRes(res.status, res.parameters, 1,
                                      {k: res.metrics[k] for k in INNER_METRICS
                                       if k in res.metrics}))
                       for proxy, res in results]
        if self.noise_seed is not None:
            np.random.seed((self.noise_seed * 1_000_003 + server_round) % 2**32)
        return self.inner.aggregate_fit(server_round, results, failures)


INNER_METRICS = (KEY_NORM_BIT,)  # what Flower's DP wrappers read: whether an update was clipped


def client_dp(exp: Experiment, inner: Strategy) -> Strategy:
    """`inner` wrapped in the DP wrapper of ``federation.client_dp`` (itself when off)."""
    dp = exp.federation.client_dp
    if dp is None:
        return inner
    sampled = exp.federation.sampled
    if not dp.adaptive:
        wrapper = (DifferentialPrivacyClientSideFixedClipping if dp.on_clients
                   else DifferentialPrivacyServerSideFixedClipping)
        return wrapper(inner, noise_multiplier=dp.noise_multiplier,
                       clipping_norm=dp.clipping_norm, num_sampled_clients=sampled)
    wrapper = ClientSideAdaptiveClipping if dp.on_clients else ServerSideAdaptiveClipping
    return wrapper(inner, noise_multiplier=dp.noise_multiplier, num_sampled_clients=sampled,
                   initial_clipping_norm=dp.clipping_norm,
                   target_clipped_quantile=dp.target_clipped_quantile,
                   clip_norm_lr=dp.clip_norm_lr, clipped_count_stddev=dp.clipped_count_stddev)
