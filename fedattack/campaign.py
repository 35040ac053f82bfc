"""Campaigns: many experiments from one YAML file, run in turn, resumed after an interruption.

A campaign file (recognised by its top-level `campaign` key, validated by
:class:`fedattack.config.Campaign`) lists experiments, each a partial Experiment mapping
deep-merged onto the shared `base`, and an optional `sweep`: a grid over dotted Experiment keys
applied to every experiment. Experiment `e` at grid point `{federation.num_participants: 2,
seed: 0}` is named `e.num_participants-2.seed-0` and runs into `DIR/<that name>/`.

Every expanded experiment is validated before anything runs. Each experiment is run by
:func:`fedattack.runner.run_experiment`, which reuses what a finished stage wrote and redoes an
unfinished one; so a rerun after Ctrl-C or a killed process skips the finished experiments and
redoes the interrupted one. `DIR/results.json` and `DIR/results.md` gather every experiment's
results, with the swept values and the paper's figure beside each.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedattack.config import (
    Campaign,
    CampaignEntry,
    ConfigError,
    Experiment,
    load_yaml,
    parse_campaign,
    parse_experiment,
)
from fedattack.io import child_dir, inside, write_atomic
from fedattack.reporting import write_results

CAMPAIGN_FILE = "campaign.yaml"
PAPER_KEY = "paper_attack_accuracy"

CAMPAIGN_COLUMNS = (
    ("experiment", "experiment", "{}"),
    ("attack", "attack", "{}"),
    ("victim", "victim", "{}"),
    ("features", "features", "{}"),
    ("attack_accuracy", "accuracy", "{:.3f}"),
    (PAPER_KEY, "paper", "{:.3f}"),
    ("auc", "AUC", "{:.3f}"),
    ("tpr_at_0.1pct_fpr", "TPR@0.1%FPR", "{:.3f}"),
    ("tpr_at_1pct_fpr", "TPR@1%FPR", "{:.3f}"),
    ("target_train_accuracy", "target train acc", "{:.3f}"),
    ("target_test_accuracy", "target test acc", "{:.3f}"),
)


@dataclass(frozen=True)
class CampaignItem:
    """One expanded experiment, the sweep values that made it and the paper's figures."""

    experiment: Experiment
    swept: dict[str, Any]
    paper: dict[str, float | dict[str, float]]


@dataclass(frozen=True)
class CampaignPlan:
    """A validated campaign file, expanded into its experiments."""

    campaign: Campaign
    data: dict[str, Any]  # the file's mapping, to recognise the same campaign in a run directory
    text: str  # the file as given, copied into the campaign directory
    items: list[CampaignItem]

    @property
    def name(self) -> str:
        return self.campaign.campaign


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`override` onto `base`: mappings merge key by key, any other value replaces."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def nest(dotted: str, value: Any) -> dict[str, Any]:
    """{"a.b": v} as {"a": {"b": v}}."""
    for key in reversed(dotted.split(".")):
        value = {key: value}
    return value


def sweep_points(sweep: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """The cartesian product of the sweep's values, in file order (the last key varies fastest)."""
    keys = list(sweep)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*sweep.values())]


def _slug(value: Any) -> str:
    """A sweep value as a name part: lists joined by '_', other odd characters made '_'."""
    text = "_".join(map(str, value)) if isinstance(value, list) else str(value)
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", text)


def expanded_name(entry: str, point: dict[str, Any]) -> str:
    """`entry.<leaf>-<value>...`, e.g. `local-passive.num_participants-2.seed-0`."""
    return ".".join([entry, *(f"{key.rsplit('.', 1)[-1]}-{_slug(v)}" for key, v in point.items())])


def _expand_entry(campaign: Campaign, entry: CampaignEntry, point: dict[str, Any],
                  source: str) -> CampaignItem:
    """`entry` merged onto the base, at sweep `point`, validated as an Experiment."""
    name = expanded_name(entry.name, point)
    data = deep_merge(campaign.base, entry.overrides())
    for key, value in point.items():
        data = deep_merge(data, nest(key, value))
    exp = parse_experiment({**data, "name": name}, f"{source}: experiment {name!r}")
    run = exp.attack.attacks if exp.attack else []
    unrun = sorted(set(entry.paper) - set(run))
    if unrun:
        raise ConfigError(f"{source}: experiment {name!r}: paper names attacks {unrun} that it "
                          f"does not run (attack.attacks: {run})")
    return CampaignItem(exp, point, dict(entry.paper))


def expand(campaign: Campaign, source: str) -> list[CampaignItem]:
    """Every experiment at every sweep point, each validated; names must stay unique."""
    points = sweep_points(campaign.sweep) if campaign.sweep else [{}]
    items = [_expand_entry(campaign, entry, point, source)
             for entry in campaign.experiments for point in points]
    names = [item.experiment.name for item in items]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"{source}: expanded experiment names collide: {repeated}")
    return items


def plan_campaign(data: dict[str, Any], text: str, source: str) -> CampaignPlan:
    campaign = parse_campaign(data, source)
    return CampaignPlan(campaign, data, text, expand(campaign, source))


def load_campaign(path: str | Path) -> CampaignPlan:
    """Read, validate and expand a campaign file; ConfigError (one line) if anything is wrong."""
    return plan_campaign(load_yaml(path), Path(path).read_text(), str(path))


def claim_campaign_dir(plan: CampaignPlan, out_dir: Path) -> None:
    """Create out_dir with campaign.yaml, or check it holds this campaign (comments may differ).

    Raises FileExistsError for a directory of another campaign, so that one campaign's results
    are never mixed with, or overwritten by, another's.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    stored = inside(out_dir, CAMPAIGN_FILE)
    if not stored.exists():
        write_atomic(stored, plan.text)
    elif load_yaml(stored) != plan.data:
        raise FileExistsError(f"{out_dir} holds a different campaign (see {stored}); "
                              "choose another --out")


def annotate(item: CampaignItem, results: list[dict]) -> list[dict]:
    """An experiment's result records with its swept values and the paper's figure added."""
    annotated = []
    for r in results:
        figure = item.paper.get(r.get("attack"))
        if isinstance(figure, dict):  # one figure per victim
            figure = figure.get(r.get("victim"))
        annotated.append({**r, **item.swept, **({PAPER_KEY: figure} if figure is not None else {})})
    return annotated


def write_campaign_results(out_dir: Path, records: list[dict]) -> None:
    write_results(out_dir, records, CAMPAIGN_COLUMNS)


def run_campaign(plan: CampaignPlan, out_dir: str | Path, show_progress: bool = True,
                 verbose: bool = False, log: Callable[[str], None] | None = None) -> list[dict]:
    """Run the campaign's experiments in turn into `out_dir/<name>/`; return all result records.

    Finished experiments are skipped (their results are read back, never rewritten). The
    campaign's results.json and results.md are rewritten after each experiment, so an
    interrupted campaign still shows what it has.
    """
    from fedattack.runner import console, experiment_finished, run_experiment

    log = log or console.print
    out_dir = Path(out_dir)
    claim_campaign_dir(plan, out_dir)
    records: list[dict] = []
    total = len(plan.items)
    for k, item in enumerate(plan.items, 1):
        exp = item.experiment
        run_dir = child_dir(out_dir, exp.name)
        state = "finished, skipped" if experiment_finished(exp, run_dir) else "running"
        log(f"{plan.name}: experiment {k} of {total}: {exp.name} ({state})")
        _, results = run_experiment(exp, run_dir, show_progress=show_progress, verbose=verbose)
        records += annotate(item, results)
        write_campaign_results(out_dir, records)
    return records

