"""Experiment and campaign configuration: the one place for defaults and validation.

A YAML file is parsed into :class:`Experiment` (one run) or :class:`Campaign` (a list of
experiments plus sweeps). Every field has a default that reproduces the paper's set-up where the
paper gives one; unknown keys are refused so that a typo never silently falls back to a default.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, values are validated on assignment,
    floats must be finite (`lr: .inf` is refused) and a boolean is never taken for a number
    (`rounds: true` is refused, not read as 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key) if isinstance(key, str) else None
                if field is not None and _holds_bool(value) and not _takes_bool(field.annotation):
                    raise ValueError(f"{key}: got {value!r}; a boolean is not a number")
        return data


def _holds_bool(value: Any) -> bool:
    if isinstance(value, list | tuple):
        return any(isinstance(v, bool) for v in value)
    return isinstance(value, bool)


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type accepts a boolean anywhere in it (`bool`, `bool | None`)."""
    if annotation is bool:
        return True
    return any(_takes_bool(a) for a in get_args(annotation) if not isinstance(a, bool))


# Counts are bounded: a typo such as `rounds: 1.0e+18` is refused, not run until killed.
MAX_COUNT = 10**9
MAX_STEPS = 100_000  # rounds and epochs
PositiveInt = Annotated[int, Field(gt=0, le=MAX_COUNT)]
NonNegInt = Annotated[int, Field(ge=0, le=MAX_COUNT)]
Steps = Annotated[int, Field(gt=0, le=MAX_STEPS)]
# Experiment and campaign names: they become folder names, so each must be one plain path
# component: no separator, not "." or "..", no leading dot (a hidden folder).
NAME_PATTERN = r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$"
NAME_MAX = 200  # below NAME_MAX of every common file system, with room for a temporary suffix


def _safe_name(name: str) -> str:
    if not re.fullmatch(NAME_PATTERN, name) or len(name) > NAME_MAX:
        raise ValueError(f"{name!r} is not a plain folder name: use letters, digits, '_', '-' "
                         f"and '.', not starting with '.', at most {NAME_MAX} characters")
    return name


SafeName = Annotated[str, AfterValidator(_safe_name)]


class KnowledgeSizes(Strict):
    """The attacker's labelled knowledge and the evaluation targets (Tables II and XI).

    `train_*` are records the attacker knows the membership of and trains its attack on;
    `test_*` are the evaluation targets, whose membership only the metrics ever read.
    Members are drawn from the target partition(s), non-members from the held-out pool.
    """

    train_members: NonNegInt = 1000
    train_nonmembers: NonNegInt = 1000
    test_members: PositiveInt = 1000
    test_nonmembers: PositiveInt = 1000

    @model_validator(mode="after")
    def _balanced(self) -> KnowledgeSizes:
        if self.test_members != self.test_nonmembers:
            raise ValueError(
                "evaluation sets are balanced: test_members must equal test_nonmembers "
                f"(got {self.test_members} and {self.test_nonmembers})"
            )
        return self


class DataConfig(Strict):
    """Which dataset, and how it is split between participants, non-members and the attacker."""

    dataset: str = "purchase100-synth"
    root: str | None = Field(
        default=None,
        description="folder holding dataset files and caches; default $FEDATTACK_DATA or "
        "~/.cache/fedattack",
    )
    num_records: Annotated[int, Field(gt=0, le=10_000_000)] | None = Field(
        default=None, description="size of a synthetic dataset (its own default when unset)"
    )
    train_size: PositiveInt = Field(
        default=2500, description="records per participant (federated) or in D (stand-alone)"
    )
    nonmember_size: PositiveInt = Field(
        default=5000, description="held-out non-member pool; also the target model's test set"
    )
    overlap: bool = Field(
        default=False, description="participants' training sets may overlap (drawn independently)"
    )
    shadow_size: NonNegInt = Field(
        default=0, description="records reserved for the attacker's shadow models"
    )
    knowledge: KnowledgeSizes = KnowledgeSizes()
    partition: Literal["iid", "by-class", "dirichlet", "quantity"] = Field(
        default="iid", description="iid: random records; by-class: each participant only holds "
        "records of its classes (Hitaj et al.'s set-up, where the victim alone owns a class); "
        "dirichlet: label (and quantity) skew as Flower Datasets' DirichletPartitioner, each "
        "class divided in Dirichlet(alpha) proportions; quantity: Dirichlet(alpha) partition "
        "sizes, random records (fedattack.data.partition)"
    )
    alpha: Annotated[float, Field(gt=0)] | list[Annotated[float, Field(gt=0)]] | None = Field(
        default=None, description="dirichlet, quantity: the concentration (one, or one per "
        "participant); small is skewed, large is near IID")
    min_partition_size: PositiveInt = Field(
        default=10, description="dirichlet, quantity: fewest records a participant may hold "
        "(dirichlet redraws, at most 10 times, until every participant has them)")
    self_balancing: bool = Field(
        default=False, description="dirichlet: a participant above the average size gets no "
        "records of later classes (DirichletPartitioner's self_balancing)")
    classes: dict[NonNegInt, list[NonNegInt]] | None = Field(
        default=None, description="by-class: participant -> the classes it draws its records "
        "from; default: class c goes to participant c mod num_participants"
    )
    nonmember_labels: Literal["auto", "population", "matched"] = Field(
        default="auto", description="how a victim's non-members (known and targets) are drawn "
        "from the held-out pool: population, at random; matched, class by class, as many of "
        "each label as the members drawn beside them, so that under label skew the label alone "
        "says nothing of membership; auto: matched for dirichlet and by-class partitions of an "
        "experiment with a membership attack, population otherwise (fedattack.data.splits)"
    )

    @field_validator("dataset")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        from fedattack.data.registry import dataset_names

        if name not in dataset_names():
            raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(dataset_names())}")
        return name


class ModelConfig(Strict):
    """The target model architecture (see fedattack.models)."""

    arch: str = "purchase-fc"
    activation: Literal["tanh", "relu"] = "tanh"

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, name: str) -> str:
        from fedattack.models import model_names

        if name not in model_names():
            raise ValueError(f"unknown model {name!r}; accepted: {', '.join(model_names())}")
        return name


class TrainConfig(Strict):
    """How the target model is trained (Section III-B of Nasr et al.).

    Defaults are the FC set-up (Adam, lr 1e-3). The CIFAR set-up is SGD, lr 0.01 with
    `lr_milestones: [50, 100]`, `lr_gamma: 0.1` and `weight_decay: 5e-4`.
    """

    optimizer: Literal["adam", "sgd"] = "adam"
    lr: Annotated[float, Field(gt=0)] = 1e-3
    momentum: Annotated[float, Field(ge=0, lt=1)] = 0.9
    weight_decay: Annotated[float, Field(ge=0)] = 0.0
    lr_milestones: list[PositiveInt] = Field(
        default_factory=list, description="epochs (or rounds) at which lr is multiplied by lr_gamma"
    )
    lr_gamma: Annotated[float, Field(gt=0, le=1)] = 0.1
    batch_size: PositiveInt = 64
    epochs: Steps = Field(default=30, description="stand-alone training epochs")
    finetune_epochs: Steps = Field(default=10, description="epochs of fine-tuning on D-delta")
    finetune_fraction: Annotated[float, Field(gt=0, lt=1)] = Field(
        default=0.4, description="share of the training set held back as D-delta (paper: 0.4)"
    )


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
Unit = Annotated[float, Field(ge=0, lt=1)]


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


LayerRef = int | str
"""A layer by module name or by (negative) index into `fedattack.models.layer_names`."""


def attack_names() -> list[str]:
    """The registered attacks (fedattack.attack_registry), which the config accepts."""
    from fedattack import attack_registry as registry

    return registry.names()


def _check_attack_name(name: str) -> str:
    from fedattack import attack_registry as registry

    registry.get(name)  # ValueError naming the accepted attacks
    return name


AttackName = Annotated[str, AfterValidator(_check_attack_name)]


class FeatureConfig(Strict):
    """Which white-box features the "whitebox" and "shadow" attacks use (Fig. 1).

    Layers are named as in the model (see `fedattack.models.layer_names`) or counted from the end
    (-1 is the output layer). A layer's activation feature is the output of the activation
    function applied to it (for the output layer, its logits; the prediction vector is
    `output`); see `fedattack.features`.
    """

    gradients: list[LayerRef] = Field(default_factory=lambda: [-1])
    activations: list[LayerRef] = Field(default_factory=list)
    output: bool = True
    output_scale: Literal["probability", "logit"] = Field(
        default="logit", description="the prediction vector as each class's log(p / (1 - p)) "
        "from the logits, which a confident prediction does not round to 1 in float32 (on "
        "Fashion-MNIST the probabilities tied the black-box scores of 885 of 2,000 targets), or "
        "as the paper's probabilities; for the white-box, black-box, white-box-outputs and "
        "shadow attacks (the unsupervised attack reads probabilities)"
    )
    loss: bool = True
    label: bool = True


class ReferenceConfig(Strict):
    """The reference models of LiRA and RMIA and their parameters (fedattack.attacks.references)."""

    models: Annotated[int, Field(ge=2, multiple_of=2)] = 8
    epochs: PositiveInt | None = Field(default=None, description="default: the target's")
    variance: Literal["per-example", "global"] = "global"  # LiRA's Gaussians
    gamma: Annotated[float, Field(gt=0)] = 2.0  # RMIA's threshold on the ratio of ratios
    a: Annotated[float, Field(ge=0, le=1)] | None = Field(
        default=None, description="offline RMIA's calibration; none: tuned on a reference")
    population: PositiveInt | None = Field(default=None, description="RMIA's z records; "
                                           "default: the whole population")
    vectorised: Literal["auto"] | bool = Field(
        default="auto", description="train FC references K at a time; auto: on CUDA only "
        "(on CPU, K stacked models cost K times one: see benchmarks/reference_models.py)")


class AttackConfig(Strict):
    """The offline membership inference run on the recorded snapshots (Nasr et al.).

    Besides the keys below, an attack registered with parameters (a pydantic model) takes them
    under its own name: ``attack: {attacks: [toy], toy: {strength: 2}}``; the resolved config
    spells out the defaults of every listed attack's parameters. ``params(name)`` reads them.
    """

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)

    attacks: list[AttackName] = Field(
        default_factory=lambda: ["whitebox", "blackbox", "threshold-loss"],
        description="registered attack names (fedattack.attack_registry); an attack's own "
        "parameters go under its name in this block",
    )
    snapshots: list[NonNegInt] | Literal["recorded"] = Field(
        default="recorded",
        description="rounds whose global models the attacker observes (federated); "
        "'recorded': every recorded round",
    )
    features: FeatureConfig = FeatureConfig()
    epochs: Steps = Field(
        default=100, description="upper bound on the attack network's training epochs"
    )
    patience: PositiveInt = Field(
        default=10, description="stop after this many epochs without a better validation AUC "
        "(the best epoch is restored)"
    )
    init: Literal["default", "paper"] = Field(
        default="default", description="the attack network's initialisation: PyTorch's "
        "default, or the paper's N(0, 0.01) (whose initial logits are within 1e-6 of 0)"
    )
    standardise: Literal["component", "coordinate", "none"] = Field(
        default="component", description="attack features shifted and scaled by statistics of "
        "the known training records: one mean and deviation per component, or per coordinate"
    )
    balance_classes: bool = Field(
        default=True, description="train the attack on members and non-members weighted to the "
        "same class distribution, so that the label alone says nothing about membership"
    )
    lr: Annotated[float, Field(gt=0)] = 1e-4
    batch_size: PositiveInt = 64
    kernels: PositiveInt = Field(default=1000, description="kernels of each gradient component")
    validation_fraction: Annotated[float, Field(gt=0, lt=1)] = 0.2
    memory_mb: Annotated[float, Field(ge=1, le=2**24)] = 256.0
    shadow_models: PositiveInt = 1
    references: ReferenceConfig = ReferenceConfig()

    @model_validator(mode="after")
    def _attack_parameters(self) -> AttackConfig:
        """Each key beyond the fields is a listed attack's parameters, validated by its model."""
        from fedattack import attack_registry as registry

        extra = self.__pydantic_extra__ if self.__pydantic_extra__ is not None else {}
        for key in list(extra):
            try:
                params = registry.get(key).params
            except ValueError:
                params = None
            if params is None:
                accepted = [*type(self).model_fields, *(n for n, a in
                            registry.registered().items() if a.params is not None)]
                close = difflib.get_close_matches(key, accepted, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"attack.{key}: unknown key{hint} (accepted: "
                                 f"{', '.join(accepted)})")
            if key not in self.attacks:
                raise ValueError(f"attack.{key}: parameters of an attack not in attack.attacks")
            if not isinstance(extra[key], params):
                extra[key] = params.model_validate(extra[key])
        for name in self.attacks:
            params = registry.get(name).params
            if params is not None and name not in extra:
                extra[name] = params()
        return self

    def params(self, name: str) -> Any:
        """The parameters of attack `name` (its registered pydantic model), or None."""
        return (self.__pydantic_extra__ or {}).get(name)


FEDERATED_MODES = ("passive", "gradient-ascent", "isolating", "isolating-gradient-ascent")
# Default relative ascent step (see AttackerConfig): measured to keep the global model within a
# few points of the passive run's test accuracy (README, Table X).
ASCENT_FRACTION = 0.1


class AttackerConfig(Strict):
    """Who attacks a federation, and how (Sections II-B, II-C and IV-D/E of Nasr et al.).

    A ``global`` attacker is the aggregator: it reads every participant's uploads and attacks each
    participant in ``targets`` separately (the result is the average over them). A ``local``
    attacker is participant ``participant``: it sees only the global models it receives and
    attacks the union of the other participants' data. Active modes move a model up the loss on
    the target records (eq. 2) at ``ascent_rounds``; an isolating aggregator sends each target
    participant its own last model, from round ``isolate_from`` on, and leaves it out of the
    others' aggregate.

    The ascent step: ``step: relative`` (default) moves the model along the target-loss gradient
    by ``fraction`` of the norm of the round's update (the aggregate minus the model broadcast at
    the round's start; for an isolated participant or a local attacker, its own upload minus the
    model it trained from), per parameter tensor (``norm: layer``) or over all parameters
    (``norm: global``), so the step does not depend on the model's scale. ``step: absolute`` is
    the paper's literal ``W <- W + gamma * dL/dW``; at gamma = 1 it keeps a Fashion-MNIST `cnn`
    federation at chance accuracy.
    """

    kind: Literal["global", "local"] = "global"
    mode: Literal[FEDERATED_MODES] = "passive"  # type: ignore[valid-type]
    targets: list[NonNegInt] | Literal["all"] = Field(
        default="all", description="participants a global attacker attacks (default: each one)"
    )
    participant: NonNegInt = Field(default=0, description="the local attacker's partition id")
    step: Literal["relative", "absolute"] = Field(
        default="relative", description="relative: the ascent is `fraction` of the norm of the "
        "round's update; absolute: W <- W + gamma * dL/dW (the paper's eq. 2 literally)"
    )
    fraction: Annotated[float, Field(gt=0, le=10)] | None = Field(
        default=None, description=f"step: relative; norm of the ascent over the norm of the "
        f"round's update (default {ASCENT_FRACTION})"
    )
    norm: Literal["layer", "global"] | None = Field(
        default=None, description="step: relative; norms taken per parameter tensor (layer, "
        "the default) or over all parameters (global)"
    )
    gamma: Annotated[float, Field(gt=0)] | None = Field(
        default=None, description="step: absolute; the step on the gradient of the mean loss of "
        "the target records (default 1.0, the paper's)"
    )
    ascent_rounds: list[PositiveInt] | Literal["all"] = Field(
        default="all", description="rounds in which an active attacker ascends"
    )
    isolate_from: PositiveInt = Field(
        default=2, description="first round whose model an isolated participant gets alone "
        "(round 1 tells the aggregator which node is which participant)"
    )

    @model_validator(mode="after")
    def _coherent(self) -> AttackerConfig:
        if self.kind == "local" and self.mode.startswith("isolating"):
            raise ValueError("a local attacker cannot isolate; isolating is a global attack")
        if self.mode.startswith("isolating") and self.targets == "all":
            raise ValueError("an isolating attacker needs targets, the participants it isolates "
                             "(e.g. [0]); isolating all of them would stop the federation")
        if self.mode.startswith("isolating") and self.isolate_from < 2:
            raise ValueError("isolate_from must be >= 2: the aggregator learns who is who in "
                             "round 1")
        if self.step == "relative" and self.gamma is not None:
            raise ValueError("gamma is the absolute step (W <- W + gamma * dL/dW); with step: "
                             "relative (the default) set fraction, or set step: absolute")
        if self.step == "absolute" and (self.fraction is not None or self.norm is not None):
            raise ValueError("fraction and norm belong to step: relative; step: absolute takes "
                             "gamma")
        return self

    @property
    def ascent_step(self) -> dict:
        """The ascent step's arguments for ``fedattack.active.GradientAscent``."""
        if self.step == "absolute":
            return {"gamma": 1.0 if self.gamma is None else self.gamma}
        return {"fraction": ASCENT_FRACTION if self.fraction is None else self.fraction,
                "norm": self.norm or "layer"}

    @property
    def active(self) -> bool:
        return self.mode.endswith("gradient-ascent")

    @property
    def isolating(self) -> bool:
        return self.mode.startswith("isolating")

    def ascends(self, server_round: int) -> bool:
        return self.active and (self.ascent_rounds == "all" or server_round in self.ascent_rounds)


class GanConfig(Strict):
    """The GAN attack of Hitaj et al. (CCS 2017) by participant `attacker`.

    From `start_round` on, the attacker trains a DCGAN-style generator so that the global model
    (its discriminator) assigns the generated samples to `victim_class`, then trains its local
    model on its own data plus `samples_per_round` generated samples labelled `fake_class`, and
    uploads. `fake_class` unset: the class the attacker declares is an extra output unit (the
    model gets num_classes + 1 outputs, as in the paper's MNIST and faces experiments).
    """

    attacker: NonNegInt = 0
    victim_class: NonNegInt = 0
    fake_class: NonNegInt | None = None
    start_round: PositiveInt = 1
    latent_dim: PositiveInt = 100
    base_channels: PositiveInt = Field(default=64, description="generator width (last layer)")
    generator_steps: Steps = Field(default=100, description="generator updates per round")
    generator_batch: PositiveInt = 64
    generator_lr: Annotated[float, Field(gt=0)] = 2e-4
    samples_per_round: PositiveInt = Field(
        default=256, description="generated samples the attacker trains on, labelled fake_class"
    )
    eval_samples: PositiveInt = Field(
        default=64, description="samples from fixed noise recorded each round for the measures"
    )
    classifier_epochs: PositiveInt = Field(
        default=3, description="epochs of the independent classifier on held-out real data"
    )
    classifier: Literal["model", "eigenfaces"] = Field(
        default="model",
        description="the measures' independent classifier: `model`, the experiment's "
        "architecture trained from scratch (needs many held-out records per class); "
        "`eigenfaces`, PCA of its training images and a softmax on the projection (plus the "
        "distance from that face space), which learns from a few photographs per subject",
    )

    @model_validator(mode="after")
    def _distinct_classes(self) -> GanConfig:
        if self.fake_class == self.victim_class:
            raise ValueError("fake_class must differ from victim_class")
        return self

    def fake_label(self, num_classes: int) -> int:
        """The label the attacker gives its generated samples."""
        return num_classes if self.fake_class is None else self.fake_class


class PrivacyConfig(Strict):
    """Defences of the honest participants: DP-SGD through Opacus (Abadi et al.; Poisson
    sampling, per-sample clipping to `max_grad_norm`, Gaussian noise of `noise_multiplier` times
    that norm; epsilon at `delta` accounted over all rounds) and the selective sharing of Shokri
    and Shmatikov that Hitaj et al. attacked: only the `share_fraction` of parameters whose
    update is largest is uploaded, the others are sent back unchanged."""

    noise_multiplier: Annotated[float, Field(ge=0)] | None = Field(
        default=1.0, description="null: no DP-SGD (selective sharing only)"
    )
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    delta: Annotated[float, Field(gt=0, lt=1)] = 1e-5
    share_fraction: Annotated[float, Field(gt=0, le=1)] = 1.0


class Experiment(Strict):
    """One run: a dataset split, a target model trained in one scenario, what is recorded."""

    name: SafeName = "experiment"
    seed: NonNegInt = 0
    scenario: Literal["federated", "standalone", "finetune"] = "federated"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainConfig = TrainConfig()
    federation: FederationConfig = FederationConfig()
    attack: AttackConfig | None = Field(
        default=None, description="membership inference on the recorded run; none if absent"
    )
    attacker: AttackerConfig | None = Field(
        default=None, description="the federated attacker; none: the aggregator records passively"
    )
    gan: GanConfig | None = Field(
        default=None, description="the GAN attack of a participant (Hitaj et al.); none if absent"
    )
    privacy: PrivacyConfig | None = Field(
        default=None, description="DP-SGD and selective sharing for honest participants"
    )

    @model_validator(mode="after")
    def _gan_and_privacy_fit(self) -> Experiment:
        if (self.gan or self.privacy) and self.scenario != "federated":
            raise ValueError(f"gan and privacy are for the federated scenario, not "
                             f"{self.scenario!r}")
        _check_partition(self)
        _check_attack(self)
        if self.attacker is not None and self.attacker.isolating and \
                self.federation.sampled < self.federation.num_participants:
            raise ValueError("attacker.mode: isolation sends a victim its own model every round, "
                             "which client sampling (federation.clients_per_round) breaks")
        _check_defences(self)
        if self.federation.strategy.name == "fedprox" and self.privacy is not None and \
                self.privacy.noise_multiplier is not None:
            raise ValueError("federation.strategy: fedprox's proximal term is not implemented "
                             "under DP-SGD (privacy.noise_multiplier); use another strategy")
        if self.gan is None:
            return self
        n = self.federation.num_participants
        if not 0 <= self.gan.attacker < n or n < 2:
            raise ValueError(f"gan.attacker {self.gan.attacker} must be one of 0..{n - 1}, "
                             "with at least one other participant")
        if self.attack is not None:
            raise ValueError("gan and attack are separate experiments: set only one")
        if self.gan.start_round > self.federation.rounds:
            raise ValueError(f"gan.start_round {self.gan.start_round} exceeds rounds="
                             f"{self.federation.rounds}")
        return self

    def output_classes(self, num_classes: int) -> int:
        """Output units of the model: one more than the dataset's classes when the GAN attacker
        declares an extra class."""
        extra = self.gan is not None and self.gan.fake_class is None
        return num_classes + int(extra)

    @model_validator(mode="after")
    def _attacker_fits_federation(self) -> Experiment:
        a, n = self.attacker, self.federation.num_participants
        if a is None:
            return self
        if self.scenario != "federated":
            raise ValueError(f"attacker is for the federated scenario, not {self.scenario!r}")
        ids = [a.participant] if a.kind == "local" else (
            [] if a.targets == "all" else list(a.targets))
        bad = [p for p in ids if p >= n]
        if bad:
            raise ValueError(f"attacker participants {bad} do not exist; accepted: 0..{n - 1}")
        if a.kind == "local" and n < 2:
            raise ValueError("a local attacker needs at least one other participant")
        return self

    def defence_label(self) -> str:
        """The defences this run deploys, in a few words (``none`` without any)."""
        parts, p, fed = [], self.privacy, self.federation
        if p is not None and p.noise_multiplier is not None:
            parts.append(f"DP-SGD z={p.noise_multiplier:g}")
        if p is not None and p.share_fraction < 1:
            parts.append(f"sparsify {p.share_fraction * 100:g}%")
        if fed.client_dp is not None:
            dp = fed.client_dp
            parts.append(f"client DP ({dp.clipping}) z={dp.noise_multiplier:g} "
                         f"C={dp.clipping_norm:g}")
        if fed.secure_aggregation is not None:
            parts.append("SecAgg+")
        return " + ".join(parts) or "none"

    def data_label(self) -> str:
        """How the records are spread over the participants (``iid``, ``dirichlet a=0.5``...)."""
        d = self.data
        return d.partition if d.alpha is None else f"{d.partition} a={d.alpha}"

    def role_of(self, partition_id: int) -> str:
        """The role participant `partition_id` plays: a key of ``clients.client_app.ROLES``."""
        a = self.attacker
        if a is not None and a.kind == "local" and a.participant == partition_id:
            return "local-attacker"
        if self.gan is not None and self.gan.attacker == partition_id:
            return "gan-attacker"
        return "honest"


def _check_defences(exp: Experiment) -> None:
    """Secure aggregation and client-level DP: what they cannot be combined with."""
    fed, a = exp.federation, exp.attacker
    if (fed.secure_aggregation or fed.client_dp) and exp.scenario != "federated":
        raise ValueError("federation.secure_aggregation and client_dp are for the federated "
                         f"scenario, not {exp.scenario!r}")
    isolating = a is not None and a.isolating
    if fed.secure_aggregation is not None:
        if fed.sampled < 2:
            raise ValueError("federation.secure_aggregation needs at least 2 participants per "
                             f"round (SecAgg+ masks pairwise); this federation has {fed.sampled}")
        if isolating:
            raise ValueError("attacker.mode: isolation needs the victim's own upload, which "
                             "SecAgg+ hides: the aggregator sees only the sum of the sampled "
                             "participants' uploads")
        if fed.client_dp is not None and not fed.client_dp.on_clients:
            raise ValueError(f"federation.client_dp.clipping: {fed.client_dp.clipping} clips each "
                             "upload on the server, which sees no upload under SecAgg+; use "
                             "client-fixed or client-adaptive")
    dp = fed.client_dp
    if dp is not None and dp.adaptive and dp.noise_multiplier > 0:
        stddev = dp.clipped_count_stddev
        given = stddev is not None
        stddev = stddev if given else fed.sampled / 20
        if dp.noise_multiplier >= 2 * stddev:
            raise ValueError(
                f"federation.client_dp: adaptive clipping splits noise_multiplier "
                f"{dp.noise_multiplier:g} between the update and the clipped count, whose noise "
                f"clipped_count_stddev ({stddev:g}{'' if given else ' = clients_per_round / 20'})"
                " must exceed noise_multiplier / 2; raise it or lower noise_multiplier")
    if fed.client_dp is not None and isolating:
        raise ValueError("attacker.mode: an isolated victim is sent a model outside the noised "
                         "aggregate, so client-level DP would not cover it; isolation is refused "
                         "under federation.client_dp")


def _check_partition(exp: Experiment) -> None:
    """by-class partitions: disjoint records, and a class list for every participant if any."""
    data, n = exp.data, exp.federation.num_participants
    if data.classes is not None and data.partition != "by-class":
        raise ValueError("data.classes is for data.partition: by-class")
    skewed = data.partition in ("dirichlet", "quantity")
    if (data.alpha is not None) != skewed:
        raise ValueError("data.alpha is for data.partition dirichlet or quantity, which need it")
    if skewed and isinstance(data.alpha, list) and len(data.alpha) != n:
        raise ValueError(f"data.alpha lists {len(data.alpha)} concentrations for {n} "
                         "participants")
    if data.partition == "iid":
        return
    if exp.scenario != "federated" or data.overlap:
        raise ValueError(f"data.partition {data.partition} needs the federated scenario without "
                         "overlap")
    if skewed:
        return
    if data.classes is not None and sorted(data.classes) != list(range(n)):
        raise ValueError(f"data.classes must list the classes of each participant 0..{n - 1}")


def _check_attack(exp: Experiment) -> None:
    """What the attack stage would refuse only after training: attacks of another scenario,
    snapshots that are never recorded."""
    attack = exp.attack
    if attack is None:
        return
    from fedattack import attack_registry as registry

    for name in attack.attacks:  # the scenarios, attackers and checks each attack declares
        reason = registry.get(name).refusal(exp)
        if reason:
            raise ValueError(reason)
    if exp.scenario != "federated" or attack.snapshots == "recorded":
        return
    fed = exp.federation
    recorded = [r for r in range(1, fed.rounds + 1) if fed.records(r)]
    unrecorded = sorted(set(attack.snapshots) - set(recorded))
    if unrecorded or not attack.snapshots:
        last = f"the last round is {fed.rounds}"
        raise ValueError(f"attack.snapshots: {unrecorded or attack.snapshots} are not recorded "
                         f"rounds ({last}; recorded: {_ranges(recorded)})")


def _ranges(rounds: list[int]) -> str:
    if not rounds:
        return "none"
    if rounds == list(range(rounds[0], rounds[-1] + 1)) and len(rounds) > 2:
        return f"{rounds[0]}..{rounds[-1]}"
    return ", ".join(map(str, rounds))


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message is one line fit for a user."""


def _is_union_tag(part: Any) -> bool:
    """Pydantic names the union member it tried in an error's location ("constrained-float",
    "dict[str,...]"); a user thinks in keys only."""
    return isinstance(part, str) and (part.startswith("constrained-") or "[" in part)


def _block_at(model: type[BaseModel], loc: list[Any]) -> type[BaseModel] | None:
    """The config block class that holds the last key of `loc` (e.g. FederationConfig)."""
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            continue  # a list index or a union tag
        model = _model_of(field.annotation)
        if model is None:
            return None
    return model


def _unknown_key(model: type[BaseModel] | None, loc: list[Any]) -> str:
    """'unknown key', with the closest accepted key when one is close."""
    block = _block_at(model, loc) if model is not None else None
    if block is None or not loc:
        return "unknown key"
    close = difflib.get_close_matches(str(loc[-1]), list(block.model_fields), n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key{hint} (accepted: {', '.join(block.model_fields)})"


def _format_validation_error(err: ValidationError, source: str,
                             model: type[BaseModel] | None = None) -> str:
    first = err.errors()[0]
    loc = [p for p in first["loc"] if not _is_union_tag(p)]
    where = ".".join(str(p) for p in loc) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = _unknown_key(model, loc)
    elif first["type"] == "literal_error":
        msg = f"got {first.get('input')!r}; {msg.lower()}"
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    keyed = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_.]*): (.*)", msg)
    if keyed:  # a block's validator naming its own key: "federation.rounds: ..."
        where = ".".join([str(p) for p in loc] + [keyed.group(1)])
        msg = keyed.group(2)
    return f"{source}: {where}: {msg}{more}"


class DuplicateKey(yaml.YAMLError):
    """A key given twice in one YAML mapping (PyYAML keeps the last one silently)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping with a repeated key, naming it and both lines."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class reports it
                break
            line = key_node.start_mark.line + 1
            if first is not None:
                raise DuplicateKey(f"key {key!r} is given twice, on line {first} and line {line}; "
                                   "keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, turning every failure into a one-line ConfigError."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {err.object[err.start]:#04x} at "
                          f"offset {err.start}); a YAML file is text") from None
    if "\0" in text:
        raise ConfigError(f"{path}: not a text file (it holds NUL bytes); a YAML file is text")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except DuplicateKey as err:
        raise ConfigError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", err)
        raise ConfigError(f"{path}:{where} is not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_experiment(data: dict[str, Any], source: str = "config") -> Experiment:
    """Validate a mapping as an Experiment, with a one-line error naming the bad field."""
    try:
        return Experiment.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source, Experiment)) from None


def load_experiment(path: str | Path) -> Experiment:
    return parse_experiment(load_yaml(path), str(path))


def experiment_yaml(exp: Experiment) -> str:
    """The fully resolved config (every default spelled out) as YAML."""
    return yaml.safe_dump(exp.model_dump(mode="json"), sort_keys=False)


Accuracy = Annotated[float, Field(ge=0, le=1)]


class CampaignEntry(BaseModel):
    """One experiment of a campaign: a partial Experiment mapping, deep-merged onto the
    campaign's `base`, plus `paper`, the attack accuracies the paper reported for it (a fraction,
    0.746 for 74.6%). Its other keys are checked when the merged experiment is validated."""

    model_config = ConfigDict(extra="allow")

    name: SafeName
    paper: dict[AttackName, Accuracy | dict[str, Accuracy]] = Field(
        default_factory=dict, description="attack -> accuracy, or attack -> {victim: accuracy} "
        "where the paper reports one figure per victim (Table IX)")

    def overrides(self) -> dict[str, Any]:
        """The Experiment keys this entry sets."""
        return dict(self.model_extra or {})


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The config block class inside a field's annotation (`AttackConfig | None` included)."""
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def is_experiment_key(dotted: str, model: type[BaseModel] = Experiment) -> bool:
    """Whether `dotted` (e.g. "federation.num_participants") names a field of the Experiment."""
    head, _, rest = dotted.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    block = _model_of(field.annotation)
    return block is not None and is_experiment_key(rest, block)


class Campaign(Strict):
    """A campaign file: experiments (each merged onto `base`) times the grid of `sweep`.

    The file is recognised by its top-level `campaign` key; see fedattack.campaign for how it is
    expanded and run.
    """

    campaign: SafeName
    description: str = ""
    base: dict[str, Any] = Field(default_factory=dict)
    experiments: list[CampaignEntry] = Field(min_length=1)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    repeats: PositiveInt = Field(
        default=1, description="run each experiment with this many seeds (its seed, seed + 1, "
        "...); results.md gives each attack's mean and spread over them")

    @model_validator(mode="after")
    def _one_way_to_set_seeds(self) -> Campaign:
        if self.repeats > 1 and "seed" in self.sweep:
            raise ValueError("repeats and a sweep over seed both set the seeds; use one of them")
        return self

    @field_validator("base")
    @classmethod
    def _base_has_no_name(cls, base: dict[str, Any]) -> dict[str, Any]:
        if "name" in base:
            raise ValueError("an experiment's name comes from its entry, not from base")
        return base

    @field_validator("experiments")
    @classmethod
    def _unique_names(cls, entries: list[CampaignEntry]) -> list[CampaignEntry]:
        names = [e.name for e in entries]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"duplicate experiment names {repeated}")
        return entries

    @field_validator("sweep")
    @classmethod
    def _known_sweep_keys(cls, sweep: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if not sweep:
            raise ValueError("sweeps over no keys; leave it out to run each experiment once")
        for key, values in sweep.items():
            if key == "name" or not is_experiment_key(key):
                raise ValueError(f"unknown experiment key {key!r}; use dotted keys such as "
                                 "'federation.num_participants'")
            if not values:
                raise ValueError(f"{key!r} sweeps over no values")
        return sweep


def is_campaign(data: dict[str, Any]) -> bool:
    """A YAML mapping is a campaign when it has a top-level `campaign` key."""
    return "campaign" in data


def parse_campaign(data: dict[str, Any], source: str = "config") -> Campaign:
    """Validate a mapping as a Campaign, with a one-line error naming the bad field."""
    try:
        return Campaign.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_validation_error(err, source, Campaign)) from None
