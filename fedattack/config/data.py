"""The `data:` block: which dataset, and how it is split between participants, non-members
and the attacker."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from fedattack.config.base import NonNegInt, PositiveInt, Strict


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

