"""The Experiment: one run, its blocks, and the rules that tie them together."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from fedattack.config.attack import AttackConfig, AttackerConfig
from fedattack.config.base import NonNegInt, SafeName, Strict
from fedattack.config.code import use_python_path
from fedattack.config.data import DataConfig
from fedattack.config.federation import FederationConfig
from fedattack.config.gan import GanConfig, PrivacyConfig
from fedattack.config.inversion import InversionConfig
from fedattack.config.model import ModelConfig, TrainConfig


class Experiment(Strict):
    """One run: a dataset split, a target model trained in one scenario, what is recorded."""

    name: SafeName = "experiment"
    seed: NonNegInt = 0
    scenario: Literal["federated", "standalone", "finetune"] = "federated"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # Before `data`, `model` and `attack`: fields are validated in order, and the attack block
    # imports its plug-ins from these folders.
    python_path: list[str] = Field(
        default_factory=list, description="folders your model factory, data loader and attack "
        "plug-ins are imported from, put on sys.path by every process that reads the experiment "
        "(relative to the working directory; resolved to absolute paths)")
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
    inversion: InversionConfig | None = Field(
        default=None, description="gradient inversion by the aggregator after training "
        "(reconstruction of the victims' records); none if absent"
    )

    @field_validator("python_path")
    @classmethod
    def _importable_from(cls, folders: list[str]) -> list[str]:
        return use_python_path(folders)

    @model_validator(mode="after")
    def _audit_fits(self) -> Experiment:
        """A model trained elsewhere (model.weights) is audited in the stand-alone scenario,
        with the indices of its training records (data.members) as the ground truth."""
        if self.model.weights is not None and self.data.members is None:
            raise ValueError("model.weights: needs data.members, the indices of the records "
                             "the model was trained on (the ground truth of the audit)")
        if self.data.members is not None and self.model.weights is None and not (
                self.scenario == "federated" and str(self.data.members).endswith(".npz")):
            raise ValueError("data.members: for a model trained elsewhere (model.weights), or, "
                             "in a federated audit of your own Flower app, a .npz of each "
                             "partition's training records (fedattack.messageapi)")
        if self.data.members is not None and self.scenario == "federated" and (
                self.data.partition != "iid" or self.data.overlap):
            raise ValueError("data.members: the app's own partitions are the ground truth; "
                             "leave data.partition and data.overlap unset")
        if self.model.weights is not None and self.scenario != "standalone":
            raise ValueError(f"model.weights: a trained model is audited in the standalone "
                             f"scenario, not {self.scenario!r}")
        return self

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
        _check_inversion(self)
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
        """The defences this run deploys, in a few words (``none`` without any; each defence's
        own words, fedattack.defences)."""
        from fedattack import defences

        return defences.label(self)

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


def _check_inversion(exp: Experiment) -> None:
    """What the inversion stage would refuse only after training: another scenario, the GAN
    experiment, participants or rounds that do not exist or are not recorded, an aggregate
    whose participants the aggregator cannot name, unknown attacks or bad parameters."""
    inv = exp.inversion
    if inv is None:
        return
    if exp.scenario != "federated":
        raise ValueError(f"inversion: gradient inversion attacks a federated run's uploads, not "
                         f"the {exp.scenario!r} scenario")
    if exp.gan is not None:
        raise ValueError("inversion and gan are separate experiments: set only one")
    fed = exp.federation
    n = fed.num_participants
    bad = sorted({p for p in inv.victims or [] if p >= n})
    if bad:
        raise ValueError(f"inversion.victims: participants {bad} do not exist; accepted: "
                         f"0..{n - 1}")
    rounds = inv.rounds or [next((r for r in range(1, fed.rounds + 1) if fed.records(r)), 0)]
    unrecorded = sorted({r for r in rounds if not (r <= fed.rounds and fed.records(r))})
    if unrecorded:
        recorded = [r for r in range(1, fed.rounds + 1) if fed.records(r)]
        raise ValueError(f"inversion.rounds: {unrecorded or 'no round'} not recorded (the last "
                         f"round is {fed.rounds}; recorded: {_ranges(recorded)})")
    aggregate = inv.observe == "aggregate" or fed.secure_aggregation is not None
    if aggregate and fed.sampled < n:
        raise ValueError("inversion: inverting a round's aggregate needs every participant in "
                         "every round (federation.clients_per_round unset), for the aggregator "
                         "to know whose records it holds")
    from fedattack.inversion import registry  # torch: only for an experiment with the block

    for name in inv.attacks:
        try:
            registry.get(name)
        except ValueError as err:
            raise ValueError(f"inversion.attacks: {err}") from None
    unused = sorted(set(inv.params) - set(inv.attacks))
    if unused:
        raise ValueError(f"inversion.params: {unused} not among inversion.attacks "
                         f"{inv.attacks}")
    for name in inv.attacks:
        try:
            registry.get(name).parameters(inv.params.get(name))
        except ValueError as err:
            raise ValueError(f"inversion.params: {err}") from None


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

