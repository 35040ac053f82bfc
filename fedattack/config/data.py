"""The `data:` block: which dataset, and how it is split between participants, non-members
and the attacker."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from fedattack.config.base import NonNegInt, PositiveInt, SafeName, Strict
from fedattack.config.builtins import DATASETS
from fedattack.config.code import FilePath, ObjectRef, absolute

SOURCES = ("csv", "npz", "imagefolder", "hf", "loader")
# The options each source takes besides its own key (and `name`).
SOURCE_OPTIONS = {"csv": ("label",), "npz": (), "imagefolder": (), "loader": (),
                  "hf": ("label", "features", "split")}


class DatasetSource(Strict):
    """Your data, as `data.dataset`: exactly one source key, and that source's options.

    - `{csv: PATH, label: COLUMN}`: a CSV file with a header row; every other column is a numeric
      feature. Labels that are all integers are the classes; otherwise the sorted distinct
      labels are numbered from 0.
    - `{npz: PATH}`: a NumPy .npz with arrays `x` (records) and `y` (integer labels), read
      without pickle.
    - `{imagefolder: PATH}`: one sub-folder per class, named as the class; images of one size.
    - `{hf: NAME_OR_PATH, split: ..., label: ..., features: [...]}`: a Hugging Face dataset
      (a local .csv/.json/.jsonl/.parquet file or folder offline; a Hub name online).
    - `{loader: "package.module:callable"}`: called with no argument, returns `(x, y)` arrays
      or a torch Dataset of `(x, y)` pairs.

    `name` names the dataset in reports (default: the file's or callable's name). Relative
    paths are taken from the working directory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    csv: FilePath | None = None
    npz: FilePath | None = None
    imagefolder: FilePath | None = None
    hf: str | None = None
    loader: ObjectRef | None = None
    label: str | None = Field(default=None, description="csv, hf: the label column (default "
                              "'label')")
    features: tuple[str, ...] | None = Field(default=None, description="hf: the feature "
                                             "columns (default: every other column)")
    split: str | None = Field(default=None, description="hf: the split (default 'train')")
    name: SafeName | None = None

    @field_validator("hf")
    @classmethod
    def _local_hf_absolute(cls, location: str | None) -> str | None:
        """A local file or folder made absolute, as the other sources' paths; a Hub name kept."""
        if location is not None and Path(location).expanduser().exists():
            return absolute(location)
        return location

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSource:
        given = [key for key in SOURCES if getattr(self, key) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SOURCES)} (got "
                             f"{', '.join(given) or 'none'})")
        source = given[0]
        stray = [key for options in SOURCE_OPTIONS.values() for key in options
                 if getattr(self, key) is not None and key not in SOURCE_OPTIONS[source]]
        if stray:
            raise ValueError(f"{stray[0]}: not an option of {source} (its options: "
                             f"{', '.join(SOURCE_OPTIONS[source]) or 'none'})")
        return self

    @property
    def source(self) -> str:
        """Which kind of source: one of SOURCES."""
        return next(key for key in SOURCES if getattr(self, key) is not None)

    @property
    def location(self) -> str:
        """The source's path, dataset name or callable."""
        return getattr(self, self.source)

    def label_column(self) -> str:
        return self.label or "label"

    def display_name(self) -> str:
        if self.name:
            return self.name
        location = self.location.rstrip("/")
        return location.rsplit(":", 1)[-1] if self.source == "loader" else \
            location.rsplit("/", 1)[-1]


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

    dataset: str | DatasetSource = Field(
        default="purchase100-synth", description="a built-in dataset's name, or your own data "
        "as a mapping (csv, npz, imagefolder, hf or loader; see DatasetSource)")
    members: FilePath | None = Field(
        default=None, description="stand-alone audit (with model.weights): the indices of the "
        "records the model was trained on (.npy, or .txt/.csv of integers); federated audit of "
        "your own Flower app: a .npz with one array of record indices per partition "
        "(partition-0, partition-1, ...), written by fedattack.messageapi; the ground truth, "
        "read only to write the run's splits")
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

    @field_validator("dataset", mode="before")
    @classmethod
    def _known_dataset(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return _source(value)
        if not isinstance(value, str):
            return value  # DatasetSource as is; anything else refused by the type
        if value not in DATASETS:  # the registry's names, without importing its loaders
            raise ValueError(f"unknown dataset {value!r}; accepted: {', '.join(DATASETS)},"
                             f" or a mapping with one of {', '.join(SOURCES)}")
        return value

    @field_serializer("dataset")
    def _source_keys_given(self, value: str | DatasetSource) -> Any:
        """A source without its unset options, which the resolved config would list as null."""
        return value if isinstance(value, str) else value.model_dump(exclude_none=True)

    @property
    def dataset_name(self) -> str:
        """The dataset's name in messages and reports."""
        return self.dataset if isinstance(self.dataset, str) else self.dataset.display_name()


def _source(value: dict) -> DatasetSource:
    """A `data.dataset` mapping validated as a DatasetSource, its first error as one line
    ('csv: ...') that the config's error formatting places under data.dataset."""
    try:
        return DatasetSource.model_validate(value)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            msg = (f"unknown key; accepted: {', '.join(DatasetSource.model_fields)}")
        raise ValueError(f"{where}: {msg}" if where else msg) from None

