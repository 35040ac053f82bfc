"""Result rows: the typed record of one attack on one victim, or of its mean over the victims,
as results.json holds them.

The schema is :class:`ResultRow` (with the records it holds: the attack's figures on all the
targets, :class:`fedattack.metrics.AttackMetrics`, written beside the row's own keys; its
figures on the selection and the report half of the targets; a DP audit). Every field declares
how it enters the "mean of N" row (fedattack.records.Mean): averaged over the victims, summed,
shared by construction (checked), the largest, a flag raised by any victim, or per victim only
and left out. :func:`mean_row` builds the mean from those declarations and nothing else.

results.json is a list of rows, each with ``schema_version`` (3; rows without it are version 1)
and its figures kept to 6 significant digits (scores, and the thresholds on them, are never
rounded: the scores are in attacks/<name>-scores.npy, from which every ROC figure recomputes).
Version 3 adds the rows of the reconstruction attacks (``fedattack run`` with an ``inversion:``
block): their figures are :class:`InversionFigures` (PSNR, SSIM, label accuracy, identification
and success rates with their intervals), written beside the row's own keys where a membership
row has its AttackMetrics, which such a row lacks; versions 2 and 3 write membership rows alike.
Version 1 differs in what version 2 adds (``inverted``, ``selection``, ``held_out``,
``strongest``, ``audit``'s selection fields) and in its mean rows, which copied the first
victim's model accuracies and best accuracy: read back, those are left out (None), as are
version 1's DP audits (chosen and bounded on the same targets, so no valid bound).

The strongest attack of an experiment (:func:`mark_strongest`) is chosen on the selection half
of each victim's targets and its figures are reported from the report half (``held_out``): no
figure reported is chosen by looking at the targets it is scored on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from fedattack.audit import Audit
from fedattack.io import read_json, write_json
from fedattack.metrics import AttackMetrics, Interval, Selection, percentile_interval
from fedattack.records import Mean, declared, from_json, json_key, role, to_json

SCHEMA_VERSION = 3
V1_AUDIT_KEYS = ("epsilon_lower_bound", "audit", "audit_strongest")  # version 1 chose and
# bounded on the same targets: no valid bound, left out when read
MEAN_PREFIX = "mean of "
CHOSEN_ON = ("the selection half of each victim's targets (seeded, balanced): the highest TPR "
             "at {fpr:.0%} FPR there, then the highest AUC; its figures (held_out) are those "
             "of the other half")


@dataclass(frozen=True)
class InversionFigures:
    """A reconstruction attack's figures on one observed update (fedattack.inversion.stage):
    the means over the reconstructed records with their 95% bootstrap intervals, the rates
    with their Wilson intervals (fedattack.inversion.metrics), and how the attack ran."""

    round: int = declared(Mean.COMMON)
    threat_model: str = declared(Mean.SHARED)
    recipe: str = declared(Mean.COMMON)  # the victim's local training as the attacker re-enacts it
    label_method: str = declared(Mean.COMMON)
    n_records: int = declared(Mean.SUMMED)
    psnr: float | None = declared(Mean.AVERAGED, figure=True)
    psnr_ci: Interval | None = declared(Mean.PER_VICTIM, figure=True, load=tuple)
    ssim: float | None = declared(Mean.AVERAGED, figure=True)
    ssim_ci: Interval | None = declared(Mean.PER_VICTIM, figure=True, load=tuple)
    label_accuracy: float = declared(Mean.AVERAGED, figure=True)
    label_accuracy_ci: Interval = declared(Mean.PER_VICTIM, figure=True, load=tuple)
    identification_rate: float = declared(Mean.AVERAGED, figure=True)
    identification_rate_ci: Interval = declared(Mean.PER_VICTIM, figure=True, load=tuple)
    success_rate: float = declared(Mean.AVERAGED, figure=True)
    success_rate_ci: Interval = declared(Mean.PER_VICTIM, figure=True, load=tuple)
    n_candidates: int = declared(Mean.LARGEST)
    matching_loss: float | None = declared(Mean.AVERAGED, figure=True)
    iterations: int = declared(Mean.COMMON)
    device: str = declared(Mean.COMMON)


@dataclass(frozen=True)
class ResultRow(Mapping):
    """One attack on one victim (or the mean over the victims), as results.json holds it.

    Read-only by results.json key too (``row["tpr_at_1pct_fpr"]``, ``row.get("auc_ci")``), for
    the tables that are drawn column by column; a changed row is a new one (:meth:`annotated`).
    """

    # what was attacked, and how
    experiment: str = declared(Mean.SHARED)
    scenario: str = declared(Mean.SHARED)
    attacker: str = declared(Mean.SHARED)
    mode: str = declared(Mean.SHARED)
    knowledge: str = declared(Mean.SHARED)
    attack: str = declared(Mean.SHARED)
    features: str | None = declared(Mean.COMMON)  # a plug-in may describe them per victim
    victim: str = declared(Mean.DERIVED)  # "participant-1" ..., or "mean of N"
    snapshots: str | None = declared(Mean.COMMON)  # the observed snapshots' labels
    observed: str | None = declared(Mean.SHARED, default=None)
    # the attack's figures on all the targets (written beside the row's own keys)
    figures: AttackMetrics | None = declared(Mean.NESTED, flatten=True, record=AttackMetrics,
                                             optional=True, default=None)  # None: a
    # reconstruction attack's row, whose figures are `reconstruction`'s
    reconstruction: InversionFigures | None = declared(
        Mean.NESTED, flatten=True, optional=True, record=InversionFigures, default=None)
    # the model attacked, and the federation's
    target_train_accuracy: float | None = declared(Mean.AVERAGED, figure=True, default=None)
    target_test_accuracy: float | None = declared(Mean.AVERAGED, figure=True, default=None)
    isolated_test_accuracy: float | None = declared(Mean.AVERAGED, figure=True, optional=True,
                                                    default=None)
    global_test_accuracy: float | None = declared(Mean.SHARED, figure=True, optional=True,
                                                  default=None)
    epsilon: float | None = declared(Mean.SHARED, figure=True, default=None)  # the accountant's
    # the aggregator's refusals that touched this victim (its upload refused, or another's that
    # claimed its partition), "round R: node N: reason"; left out when there were none
    refusals: tuple[str, ...] | None = declared(Mean.PER_VICTIM, optional=True, default=None,
                                                load=tuple)
    attack_time_s: float | None = declared(Mean.AVERAGED, figure=True, optional=True,
                                           default=None)
    # a learnt attack's training (per victim), and the flags
    best_epoch: int | None = declared(Mean.PER_VICTIM, optional=True, default=None)
    epochs_trained: int | None = declared(Mean.PER_VICTIM, optional=True, default=None)
    val_auc: float | None = declared(Mean.PER_VICTIM, figure=True, optional=True, default=None)
    threshold_loss_val_auc: float | None = declared(Mean.PER_VICTIM, figure=True, optional=True,
                                                    default=None)
    history: list[dict] | None = declared(Mean.PER_VICTIM, figure=True, optional=True,
                                          default=None)
    undertrained: bool | None = declared(Mean.ANY, optional=True, default=None)
    inverted: bool | None = declared(Mean.DERIVED, optional=True, default=None)  # AUC interval
    # entirely below 0.5 (in a mean: the mean's own)
    inverted_victims: tuple[str, ...] | None = declared(Mean.DERIVED, optional=True,
                                                        default=None, load=tuple)  # a mean's
    # victims whose rows are inverted: averaged in all the same, and named here
    # the strongest attack's choice (fedattack.metrics.target_halves)
    selection: Selection | None = declared(Mean.NESTED, optional=True, record=Selection,
                                           default=None)
    held_out: AttackMetrics | None = declared(Mean.NESTED, optional=True, record=AttackMetrics,
                                              default=None)
    strongest: bool | None = declared(Mean.PER_VICTIM, optional=True, default=None)
    strongest_chosen_on: str | None = declared(Mean.PER_VICTIM, optional=True, default=None)
    # under DP: the valid epsilon lower bound of this attack on this victim (fedattack.audit)
    epsilon_lower_bound: float | None = declared(Mean.PER_VICTIM, figure=True, optional=True,
                                                 default=None)
    audit: Audit | None = declared(Mean.PER_VICTIM, optional=True, record=Audit, default=None)
    audit_strongest: bool | None = declared(Mean.PER_VICTIM, optional=True, default=None)
    # a campaign's annotations (fedattack.campaign), set after the mean is built
    paper_attack_accuracy: float | None = declared(Mean.SHARED, optional=True, default=None)
    defence: str | None = declared(Mean.SHARED, optional=True, default=None)
    partition: str | None = declared(Mean.SHARED, optional=True, default=None)
    passive_twin: str | None = declared(Mean.SHARED, optional=True, default=None)
    passive_twin_global_test_accuracy: float | None = declared(
        Mean.SHARED, figure=True, optional=True, default=None)
    global_test_accuracy_drop: float | None = declared(Mean.SHARED, figure=True, optional=True,
                                                       default=None)
    victim_test_accuracy_drop: float | None = declared(Mean.SHARED, figure=True, optional=True,
                                                       default=None)
    utility_flag: bool | None = declared(Mean.SHARED, optional=True, default=None)
    # keys this schema does not declare, kept as read and written back (a campaign's swept
    # values, e.g. "federation.num_participants")
    extra: dict[str, Any] = declared(Mean.SHARED, flatten=True, default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The row as results.json holds it: figures rounded, ``schema_version`` first."""
        return {"schema_version": SCHEMA_VERSION, **to_json(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultRow:
        """A row read from results.json (any schema version up to this one)."""
        version = data.get("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ValueError(f"results.json row of schema version {version!r}; this fedattack "
                             f"reads versions 1 to {SCHEMA_VERSION}")
        if version == 1:
            data = {k: v for k, v in data.items() if k not in V1_AUDIT_KEYS}
        row, used = from_json(cls, data)
        extra = {k: v for k, v in data.items() if k not in used and k != "schema_version"}
        row = replace(row, extra=extra)
        return _without_copied_figures(row) if version == 1 else row

    def annotated(self, values: Mapping[str, Any]) -> ResultRow:
        """This row with `values` (by results.json key) set; keys the schema does not declare
        go to ``extra``."""
        names = {json_key(f): f.name for f in fields(self) if not f.metadata["flatten"]}
        figures = set(values) & {json_key(f) for f in fields(AttackMetrics)}
        if figures:
            raise ValueError(f"an attack's figures are not annotations: {sorted(figures)}")
        known = {names[k]: v for k, v in values.items() if k in names}
        extra = {k: v for k, v in values.items() if k not in names}
        return replace(self, **known, extra={**self.extra, **extra})

    @cached_property
    def _json(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **to_json(self, round_figures=False)}

    def __getitem__(self, key: str) -> Any:
        return self._json[key]

    def __iter__(self):
        return iter(self._json)

    def __len__(self) -> int:
        return len(self._json)


def _without_copied_figures(row: ResultRow) -> ResultRow:
    """A version-1 mean row without the fields version 1 copied from its first victim."""
    if not row.victim.startswith(MEAN_PREFIX):
        return row
    figures = row.figures and replace(row.figures, best_accuracy=None)
    return replace(row, figures=figures, target_train_accuracy=None, target_test_accuracy=None)


def is_reconstruction(row: Mapping) -> bool:
    """Whether a result record (a row, or its results.json form) is a reconstruction attack's."""
    return "n_candidates" in row


def is_inverted(figures: AttackMetrics | None) -> bool | None:
    """Whether an attack's AUC interval lies entirely below 0.5: it ranks the members below the
    non-members beyond chance (for a learnt attack: what it learnt is inverted on the targets)."""
    if figures is None or figures.auc_ci is None:
        return None
    return bool(figures.auc_ci[1] < 0.5)


def _same(column: list) -> bool:
    return all(v == column[0] for v in column[1:])


def _combine(name: str, mean: Mean, column: list, nested: type | None) -> Any:
    """The mean row's value of one field from the victims' `column` of values."""
    if mean in (Mean.PER_VICTIM, Mean.DERIVED, Mean.INTERVAL):
        return None  # left out, or computed afterwards
    if mean is Mean.SHARED:
        if not _same(column):
            raise ValueError(f"{name} differs between the victims' rows ({column}) though it is "
                             "the same for every victim by construction")
        return column[0]
    if mean is Mean.COMMON:
        return column[0] if _same(column) else None
    if mean is Mean.ANY:
        flags = [v for v in column if v is not None]
        return any(flags) if flags else None
    if mean is Mean.DRAWS:
        keys = set.intersection(*(set(d) for d in column)) if column else set()
        return {k: np.mean([d[k] for d in column], axis=0) for k in keys}
    if None in column:
        return None
    if mean is Mean.NESTED:
        return mean_record(column, nested)
    if mean is Mean.AVERAGED:
        return float(np.mean(column))
    if mean is Mean.SUMMED:
        return sum(column)
    return max(column)  # Mean.LARGEST


def mean_record(records: Sequence[Any], cls: type | None = None) -> Any:
    """The record of the mean over `records` (one per victim), field by field as declared. An
    interval is the percentile interval of the mean of the victims' bootstrap resamples (each
    victim's targets resampled on their own); None where its figure is None or a victim has no
    resamples of it."""
    cls = cls or type(records[0])
    values, intervals = {}, {}
    for f in fields(cls):
        mean = role(f)
        values[f.name] = _combine(f"{cls.__name__}.{f.name}", mean,
                                  [getattr(r, f.name) for r in records], f.metadata["record"])
        if mean is Mean.INTERVAL:
            intervals[f.name] = f.metadata["of"]
    draws = next((values[f.name] for f in fields(cls) if role(f) is Mean.DRAWS), {})
    by_key = {json_key(f): f.name for f in fields(cls)}
    for name, of in intervals.items():
        if values[by_key[of]] is not None and of in draws:
            values[name] = percentile_interval(draws[of])
    return cls(**values)


def mean_row(rows: Sequence[ResultRow]) -> ResultRow:
    """The "mean of N" row of one attack over its N victims' rows. An inverted victim's row is
    averaged in (leaving it out would choose by the evaluation's own outcome), and named in
    ``inverted_victims``; the mean's own ``inverted`` is read from its own interval."""
    mean = mean_record(rows)
    inverted = tuple(r.victim for r in rows if r.inverted)
    return replace(mean, victim=f"{MEAN_PREFIX}{len(rows)}", inverted=is_inverted(mean.figures),
                   inverted_victims=inverted or None)


def mean_rows(results: Sequence[ResultRow]) -> list[ResultRow]:
    """One "mean of N" row per attack, in the order the attacks first appear."""
    attacks = dict.fromkeys(r.attack for r in results)
    return [mean_row([r for r in results if r.attack == name]) for name in attacks]


def mark_strongest(results: Sequence[ResultRow]) -> list[ResultRow]:
    """Flag (``strongest``) the strongest attack of each experiment, chosen on the selection
    half of the targets (highest TPR at 1% FPR there, or at the smallest FPR the half resolves,
    then highest AUC) among the mean rows where the experiment has them, else among its rows;
    its figures are its ``held_out`` ones, from the other half. Rows without a selection (read
    from version 1) are never chosen."""
    chosen: dict[str, int] = {}
    for experiment in dict.fromkeys(r.experiment for r in results):
        rows = [i for i, r in enumerate(results)
                if r.experiment == experiment and r.selection is not None]
        means = [i for i in rows if results[i].victim.startswith(MEAN_PREFIX)]
        pool = means or rows
        if pool:
            chosen[experiment] = max(pool, key=lambda i: results[i].selection.criterion)
    return [replace(r, strongest=True,
                    strongest_chosen_on=CHOSEN_ON.format(fpr=r.selection.fpr))
            if chosen.get(r.experiment) == i else r for i, r in enumerate(results)]


def written(records: Iterable[ResultRow | dict]) -> list[dict]:
    """Records as results.json holds them: result rows by :meth:`ResultRow.to_dict`, other
    records (the GAN attack's) as they are."""
    return [r.to_dict() if isinstance(r, ResultRow) else dict(r) for r in records]


def write_rows(path: str | Path, rows: Iterable[ResultRow | dict]) -> None:
    write_json(path, written(rows))


def read_rows(path: str | Path) -> list[ResultRow]:
    """An experiment's results.json, read back into result rows."""
    return [ResultRow.from_dict(row) for row in read_json(path)]
