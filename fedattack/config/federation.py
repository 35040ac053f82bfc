"""The `federation:` block: participants, rounds, the aggregation rule, what is recorded, and
the federation-level defences (SecAgg+, client-level DP)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from fedattack.config.base import PositiveInt, Steps, Strict, Unit

# Flower's strategies by name, and the server-side parameters each takes (Flower's defaults apply
# to those not given). The clients' learning rate is training.lr whatever the strategy.
STRATEGY_PARAMETERS = {
    "fedavg": (),
    "fedavgm": ("server_learning_rate", "server_momentum"),
    "fedprox": ("proximal_mu",),
    "fedadam": ("eta", "beta_1", "beta_2", "tau"),
    "fedyogi": ("eta", "beta_1", "beta_2", "tau"),
    "fedadagrad": ("eta", "tau"),
}


class StrategyConfig(Strict):
    """The aggregation rule: one of Flower's strategies, which the recording and malicious
    aggregators wrap (strategies/). ``strategy: fedadam`` or ``strategy: {name: fedadam, eta:
    0.01}``. FedAvg here averages in float64 in partition order (bit-identical for a seed);
    the others are Flower's own classes. FedProx's clients add the proximal term
    ``proximal_mu / 2 * ||w - w_global||^2`` to their local loss."""

    name: Literal[tuple(STRATEGY_PARAMETERS)] = "fedavg"  # type: ignore[valid-type]
    server_learning_rate: Annotated[float, Field(gt=0)] | None = None
    server_momentum: Unit | None = None
    proximal_mu: Annotated[float, Field(gt=0)] | None = None
    eta: Annotated[float, Field(gt=0)] | None = None
    beta_1: Unit | None = None
    beta_2: Unit | None = None
    tau: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="before")
    @classmethod
    def _name_alone(cls, data: Any) -> Any:
        return {"name": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _parameters_of_the_strategy(self) -> StrategyConfig:
        allowed = STRATEGY_PARAMETERS[self.name]
        for key in type(self).model_fields:
            if key != "name" and getattr(self, key) is not None and key not in allowed:
                owners = [n for n, keys in STRATEGY_PARAMETERS.items() if key in keys]
                raise ValueError(f"federation.strategy.{key} is a parameter of "
                                 f"{', '.join(owners)}, not {self.name}")
        if self.name == "fedprox" and self.proximal_mu is None:
            raise ValueError("federation.strategy: fedprox needs proximal_mu (e.g. 0.01)")
        return self

    def options(self) -> dict[str, float]:
        """The given parameters, as keyword arguments of the Flower strategy."""
        return {k: getattr(self, k) for k in STRATEGY_PARAMETERS[self.name]
                if getattr(self, k) is not None}


class SecAggConfig(Strict):
    """Secure aggregation with Flower's SecAgg+ (Bell et al. 2020): ``SecAggPlusWorkflow`` on the
    server, ``secaggplus_mod`` on the clients. Each participant's upload is quantised and masked;
    the aggregator recovers only their weighted sum, so the global attacker observes only the
    aggregate. ``secure_aggregation: true`` takes these defaults; the parameters are Flower's:
    an int counts shares (neighbours), a float is a fraction of the sampled participants.
    Every parameter is clipped to +-``clipping_range`` before quantisation."""

    num_shares: Annotated[float, Field(gt=0)] | PositiveInt = 1.0
    reconstruction_threshold: Annotated[float, Field(gt=0, le=1)] | PositiveInt = 0.5
    clipping_range: Annotated[float, Field(gt=0)] = 8.0
    quantization_range: Annotated[int, Field(gt=1, le=2**30)] = 2**22
    modulus_range: Annotated[int, Field(gt=2, le=2**32)] = 2**32

    @model_validator(mode="after")
    def _what_flower_accepts(self) -> SecAggConfig:
        """The rules SecAggPlusWorkflow checks when it is built (flwr 1.42,
        ``_check_init_params``), said in this block's keys before anything runs."""
        shares, threshold = self.num_shares, self.reconstruction_threshold
        if _is_count(shares) and shares == 2:
            raise ValueError("num_shares: 2 is refused by SecAgg+: a number of shares is 1 "
                             "(every sampled participant) or at least 3; a fraction such as "
                             "0.5 is a share of the sampled participants")
        if _is_count(shares) and _is_count(threshold) and 1 not in (shares, threshold) \
                and threshold >= shares:
            raise ValueError(f"reconstruction_threshold: {threshold} must be below num_shares "
                             f"{shares} (of a participant's shares, fewer than all reconstruct "
                             "its secrets)")
        if self.modulus_range & (self.modulus_range - 1):
            raise ValueError(f"modulus_range: {self.modulus_range} is not a power of 2 (SecAgg+ "
                             "masks modulo it); e.g. 2**32 = 4294967296")
        if self.modulus_range <= self.quantization_range:
            raise ValueError(f"modulus_range: {self.modulus_range} must exceed quantization_range "
                             f"{self.quantization_range} (each quantised value lies in "
                             "0..quantization_range, and the sum is taken modulo modulus_range)")
        return self

    def resolved(self, sampled: int) -> tuple[int, int, int]:
        """(shares, threshold, neighbours): what SecAggPlusWorkflow makes of num_shares and
        reconstruction_threshold for `sampled` participants in a round (flwr 1.42,
        ``setup_stage``), and how many participants (itself included) share each one's secrets.
        Each of them must reach `threshold` neighbours, or the round is aborted ("Insufficient
        available nodes")."""
        shares = 1.0 if self.num_shares == 1 else self.num_shares
        if isinstance(shares, float):
            count = round(shares * sampled)
            if count < sampled and count % 2 == 0:
                count += 1
            count = sampled if count <= 2 else count
        else:
            count = shares
        threshold = 1.0 if self.reconstruction_threshold == 1 else self.reconstruction_threshold
        needed = max(round(threshold * count), 2) if isinstance(threshold, float) else threshold
        if count != sampled and count % 2 == 0:  # Flower makes an even number of shares odd
            count += 1
        return count, needed, min(2 * (count // 2) + 1, sampled)

    def check_federation(self, sampled: int) -> None:
        """ValueError, naming this block's key, when `sampled` participants a round cannot run
        SecAgg+: a threshold no participant's neighbourhood reaches (every round would be
        aborted), or a sum the modulus cannot hold (the aggregate would wrap around)."""
        count, needed, neighbours = self.resolved(sampled)
        if needed > neighbours:
            key = ("num_shares" if _is_count(self.num_shares) and isinstance(
                self.reconstruction_threshold, float) and self.num_shares > sampled
                else "reconstruction_threshold")
            raise ValueError(
                f"{key}: SecAgg+ would need {needed} participants to reconstruct each one's "
                f"secrets (num_shares {self.num_shares} -> {count} shares, "
                f"reconstruction_threshold {self.reconstruction_threshold} -> {needed}) but only "
                f"{neighbours} can hold them with {sampled} participants sampled a round, so "
                f"every round would be aborted; use a threshold of at most {neighbours}, or "
                "fractions (num_shares: 1.0, reconstruction_threshold: 0.5)")
        if sampled * self.quantization_range >= self.modulus_range:
            raise ValueError(
                f"modulus_range: {self.modulus_range} cannot hold the sum of {sampled} "
                f"participants' values quantised into 0..{self.quantization_range} (the sum "
                "wraps around, and the aggregate is wrong); raise modulus_range (a power of 2 "
                "up to 2**32) or lower quantization_range")


def _is_count(value: float | int) -> bool:
    """Whether a SecAgg+ parameter is a count (an int) rather than a fraction (a float)."""
    return isinstance(value, int)


CLIENT_DP_CLIPPING = ("server-fixed", "client-fixed", "server-adaptive", "client-adaptive")


class ClientDPConfig(Strict):
    """Client-level DP (McMahan et al. 2018) with Flower's wrappers: each participant's update
    (upload minus the model it received) is clipped to ``clipping_norm`` in L2, by the server
    (``server-*``, the aggregator sees the raw uploads) or by the client's mod before upload
    (``client-*``: ``fixedclipping_mod`` / ``adaptiveclipping_mod``), and Gaussian noise of
    ``noise_multiplier * clipping_norm / clients_per_round`` is added to the average. Adaptive
    clipping (Andrew et al. 2021) starts from ``clipping_norm`` and moves it towards the
    ``target_clipped_quantile`` of the update norms. The average is unweighted (every sampled
    participant weighs 1, as DP-FedAvg), so that one participant moves it by at most
    ``clipping_norm / clients_per_round``; epsilon at ``delta`` is accounted (Opacus' RDP
    accountant) for the sampled Gaussian mechanism over the rounds."""

    clipping: Literal[CLIENT_DP_CLIPPING] = "server-fixed"  # type: ignore[valid-type]
    noise_multiplier: Annotated[float, Field(ge=0)] = 1.0
    clipping_norm: Annotated[float, Field(gt=0)] = 1.0
    target_clipped_quantile: Annotated[float, Field(ge=0, le=1)] = 0.5
    clip_norm_lr: Annotated[float, Field(gt=0)] = 0.2
    clipped_count_stddev: Annotated[float, Field(ge=0)] | None = None
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5

    @property
    def adaptive(self) -> bool:
        return self.clipping.endswith("adaptive")

    @property
    def on_clients(self) -> bool:
        return self.clipping.startswith("client")


class FederationConfig(Strict):
    """Federated averaging over Flower: participants, rounds, what the aggregator records."""

    num_participants: Annotated[int, Field(ge=1, le=1000)] = 4
    rounds: Steps = 20
    local_epochs: Steps = Field(default=1, description="local epochs per round (paper: 1)")
    record_rounds: list[PositiveInt] | Literal["all", "none"] = Field(
        default="all", description="rounds whose uploads and broadcasts are recorded"
    )
    client_cpus: PositiveInt | None = Field(
        default=None, description="CPUs per simulated client; default: spread the machine's cores"
    )
    client_gpus: Annotated[float, Field(ge=0)] = 0.0
    strategy: StrategyConfig = StrategyConfig()
    clients_per_round: PositiveInt | None = Field(
        default=None, description="participants sampled each round (Flower's fraction_fit = "
        "clients_per_round / num_participants), seeded by the experiment's seed; default: all")
    secure_aggregation: SecAggConfig | None = Field(
        default=None, description="Flower's SecAgg+: the aggregator sees only the aggregate")
    client_dp: ClientDPConfig | None = Field(
        default=None, description="client-level DP with Flower's DP wrappers (clip + noise)")

    @model_validator(mode="before")
    @classmethod
    def _true_for_defaults(cls, data: Any) -> Any:
        """``secure_aggregation: true`` takes Flower's defaults, ``false`` turns it off."""
        if isinstance(data, dict) and isinstance(data.get("secure_aggregation"), bool):
            data = {**data, "secure_aggregation": {} if data["secure_aggregation"] else None}
        return data

    @model_validator(mode="after")
    def _rounds_in_range(self) -> FederationConfig:
        if self.clients_per_round is not None and self.clients_per_round > self.num_participants:
            raise ValueError(f"federation.clients_per_round {self.clients_per_round} exceeds "
                             f"num_participants={self.num_participants}")
        if isinstance(self.record_rounds, list):
            late = [r for r in self.record_rounds if r > self.rounds]
            if late:
                raise ValueError(
                    f"record_rounds {late} exceed rounds={self.rounds}; accepted: 1..{self.rounds}"
                )
        return self

    @model_validator(mode="after")
    def _secure_aggregation_can_aggregate(self) -> FederationConfig:
        # fewer than 2 sampled: refused by the experiment's own check of SecAgg+
        if self.secure_aggregation is not None and self.sampled >= 2:
            try:
                self.secure_aggregation.check_federation(self.sampled)
            except ValueError as err:
                raise ValueError(f"secure_aggregation.{err}") from None
        return self

    @property
    def sampled(self) -> int:
        """How many participants train each round."""
        return self.clients_per_round or self.num_participants

    def records(self, server_round: int) -> bool:
        """Whether the aggregator records this round."""
        if self.record_rounds == "all":
            return True
        if self.record_rounds == "none":
            return False
        return server_round in self.record_rounds

