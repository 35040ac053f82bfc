"""The `attack:` and `attacker:` blocks: the offline membership inference and who attacks a
federation, how."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, ConfigDict, Field, model_validator

from fedattack.config.base import NonNegInt, PositiveInt, Steps, Strict
from fedattack.config.code import ModuleName

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


# LiRA (Carlini et al. 2022) and RMIA (Zarifzadeh et al. 2024) use at most 256 and 254.
MAX_REFERENCE_MODELS = 1024


class ReferenceConfig(Strict):
    """The reference models of LiRA and RMIA and their parameters (fedattack.attacks.references)."""

    models: Annotated[int, Field(ge=2, le=MAX_REFERENCE_MODELS, multiple_of=2)] = 8
    epochs: Steps | None = Field(default=None, description="default: the target's")
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

    # Before `attacks`: the plug-ins register the attacks it may name.
    plugins: list[ModuleName] = Field(
        default_factory=list, description="modules of your own that register attacks "
        "(fedattack.attack_registry.register), imported from python_path when the experiment "
        "is parsed")
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

    @model_validator(mode="before")
    @classmethod
    def _import_plugins(cls, data: Any) -> Any:
        """Import the plug-ins first, so that `attacks` and their parameters may name theirs."""
        plugins = data.get("plugins") if isinstance(data, dict) else None
        if isinstance(plugins, list) and all(isinstance(p, str) for p in plugins):
            from fedattack import attack_registry as registry

            registry.load_plugins(plugins)
        return data

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
# few points of the passive run's test accuracy (docs/reproductions/federated-attackers.md,
# Table X).
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

