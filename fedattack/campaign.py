"""Campaigns: many experiments from one YAML file, run in turn, resumed after an interruption.

A campaign file (recognised by its top-level `campaign` key, validated by
:class:`fedattack.config.Campaign`) lists experiments, each a partial Experiment mapping
deep-merged onto the shared `base`, and an optional `sweep`: a grid over dotted Experiment keys
applied to every experiment. Experiment `e` at grid point `{federation.num_participants: 2,
seed: 0}` is named `e.num_participants-2.seed-0` and runs into `DIR/<that name>/`. `repeats: N`
runs every experiment with N seeds (its own seed, seed + 1, ...), named as a sweep over `seed`.

Experiments that differ only in their seed (by `repeats` or a sweep over `seed`) form a group:
results.md gives each group's attack rows as mean, standard deviation and range over the seeds,
and `DIR/results-over-seeds.json` holds them. An active federated attacker's experiment whose
campaign also has its passive twin (the same experiment, attack settings aside, with no attacker
or a passive one) gets the drop of the global model's final test accuracy against the twin
(`global_test_accuracy_drop`); above 5 points it is flagged (`utility_flag`) in results.md.

Every expanded experiment is validated before anything runs. Each experiment is run by
:func:`fedattack.runner.run_experiment`, which reuses what a finished stage wrote and redoes an
unfinished one; so a rerun after Ctrl-C or a killed process skips the finished experiments and
redoes the interrupted one. Experiments that differ only in their `attack` settings (and name)
train one target model: the first trains it, the later ones start from a copy of its run.json,
snapshots and splits (run.json's `trained_in` names the experiment that trained it), so a table
of attack features over one model costs one training. `DIR/results.json` and `DIR/results.md`
gather every experiment's results, with the swept values and the paper's figure beside each.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedattack.audit import summary_lines
from fedattack.config import (
    Campaign,
    CampaignEntry,
    ConfigError,
    Experiment,
    load_yaml,
    parse_campaign,
    parse_experiment,
)
from fedattack.io import child_dir, exclusive, inside, write_atomic, write_json
from fedattack.reporting import (
    RESULTS_JSON,
    RESULTS_MD,
    UTILITY_DROP_FLAG,
    columns,
    format_cell,
    markdown_table,
    strongest_rows,
    with_flags,
)
from fedattack.results import ResultRow, is_reconstruction, write_rows

CAMPAIGN_FILE = "campaign.yaml"
PAPER_KEY = "paper_attack_accuracy"
OVER_SEEDS_JSON = "results-over-seeds.json"

CAMPAIGN_COLUMNS = columns("experiment", "attack", "victim", "features", "attack_accuracy",
                           PAPER_KEY, "auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr",
                           "target_train_accuracy", "target_test_accuracy",
                           "global_test_accuracy_drop")
SPREAD_KEYS = ("attack_accuracy", "auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr",
               "target_test_accuracy", "global_test_accuracy", "global_test_accuracy_drop")
SPREAD_COLUMNS = columns("experiment", "attack", "victim", "seeds", "attack_accuracy", PAPER_KEY,
                         "auc", "tpr_at_0.1pct_fpr", "tpr_at_1pct_fpr", "target_test_accuracy",
                         "global_test_accuracy_drop")
INVERSION_COLUMNS = (*columns("experiment", "defence"), ("attack", "attack", "{}"),
                     ("victim", "victim", "{}"), ("n_records", "records", "{}"),
                     ("psnr", "PSNR (dB)", "{:.1f}"), ("ssim", "SSIM", "{:.3f}"),
                     ("label_accuracy", "labels", "{:.2f}"),
                     ("identification_rate", "identified", "{:.2f}"),
                     ("success_rate", "recovered", "{:.2f}"), ("epsilon", "epsilon", "{:.3g}"))
ROW_KEYS = ("attacker", "mode", "victim", "attack", "features")  # one attack row of a run
STRONGEST_COLUMNS = columns("experiment", "partition", "defence", "attacker", "mode", "attack",
                            "victim", "held_out.auc", "held_out.tpr_at_1pct_fpr",
                            "global_test_accuracy", "epsilon")


@dataclass(frozen=True)
class CampaignItem:
    """One expanded experiment, the sweep values that made it and the paper's figures;
    `group` names it without its seed (experiments of one group differ only in the seed)."""

    experiment: Experiment
    swept: dict[str, Any]
    paper: dict[str, float | dict[str, float]]
    group: str | None = None
    entry: str | None = None  # the name of the campaign entry it was expanded from


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
    group = expanded_name(entry.name, {k: v for k, v in point.items() if k != "seed"})
    data = deep_merge(campaign.base, entry.overrides())
    for key, value in point.items():
        data = deep_merge(data, nest(key, value))
    exp = parse_experiment({**data, "name": name}, f"{source}: experiment {name!r}")
    run = exp.attack.attacks if exp.attack else []
    unrun = sorted(set(entry.paper) - set(run))
    if unrun:
        raise ConfigError(f"{source}: experiment {name!r}: paper names attacks {unrun} that it "
                          f"does not run (attack.attacks: {run})")
    return CampaignItem(exp, point, dict(entry.paper), group, entry.name)


def _repeated(campaign: Campaign, entry: CampaignEntry, point: dict[str, Any],
              source: str) -> list[CampaignItem]:
    """The experiment at `point`, once, or with `campaign.repeats` seeds from its own."""
    item = _expand_entry(campaign, entry, point, source)
    if campaign.repeats == 1:
        return [item]
    first = item.experiment.seed
    return [_expand_entry(campaign, entry, {**point, "seed": first + k}, source)
            for k in range(campaign.repeats)]


def expand(campaign: Campaign, source: str) -> list[CampaignItem]:
    """Every experiment at every sweep point (and seed of `repeats`), each validated; names
    must stay unique."""
    points = sweep_points(campaign.sweep) if campaign.sweep else [{}]
    items = [item for entry in campaign.experiments for point in points
             for item in _repeated(campaign, entry, point, source)]
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


def with_values(record: ResultRow | dict, values: dict[str, Any]) -> ResultRow | dict:
    """`record` with `values` set: a result row annotated, or a GAN record (a dict) updated."""
    if isinstance(record, ResultRow):
        return record.annotated(values)
    return {**record, **values}


def annotate(item: CampaignItem, results: list) -> list:
    """An experiment's result records with its swept values and the paper's figure added."""
    annotated = []
    for r in results:
        figure = item.paper.get(r.get("attack"))
        if isinstance(figure, dict):  # one figure per victim
            figure = figure.get(r.get("victim"))
        annotated.append(with_values(r, {
            **item.swept, **({PAPER_KEY: figure} if figure is not None else {}),
            "defence": item.experiment.defence_label(),
            "partition": item.experiment.data_label()}))
    return annotated


def _is_active(exp: Experiment) -> bool:
    return exp.attacker is not None and exp.attacker.mode != "passive"


def _training_key(exp: Experiment) -> dict[str, Any]:
    """What decides the global model: the experiment without its name, attacks and attacker."""
    data = exp.model_dump(mode="json")
    for key in ("name", "attack", "attacker", "inversion"):
        data.pop(key, None)
    return data


def passive_twins(plan: CampaignPlan) -> dict[str, str]:
    """Active federated experiment -> its passive twin in the campaign: the first experiment
    equal to it but for name, attack settings and attacker, whose attacker is absent or
    passive (a passive attacker changes nothing in training, so any passive one is a twin)."""
    twins = {}
    for item in plan.items:
        exp = item.experiment
        if exp.scenario != "federated" or not _is_active(exp):
            continue
        key = _training_key(exp)
        for other in plan.items:
            if not _is_active(other.experiment) and _training_key(other.experiment) == key:
                twins[exp.name] = other.experiment.name
                break
    return twins


def with_utility_drop(records: list, twins: dict[str, str]) -> list:
    """Records of active experiments with their twin, the drop of the global model's final test
    accuracy against it (a fraction, 0.05 = 5 points) and `utility_flag` above 5 points;
    experiments whose twin has not run yet are left as they are."""
    accuracy = {r["experiment"]: r["global_test_accuracy"] for r in records
                if r.get("global_test_accuracy") is not None}
    out = []
    for r in records:
        twin = twins.get(r.get("experiment"))
        if twin in accuracy and r.get("global_test_accuracy") is not None:
            drop = accuracy[twin] - r["global_test_accuracy"]
            values = {"passive_twin": twin, "passive_twin_global_test_accuracy": accuracy[twin],
                      "global_test_accuracy_drop": drop,
                      "utility_flag": drop > UTILITY_DROP_FLAG}
            if r.get("isolated_test_accuracy") is not None:
                # an isolated victim never sees the global model: what it would notice is its
                # own model doing worse than the federation's would have
                victim_drop = accuracy[twin] - r["isolated_test_accuracy"]
                values["victim_test_accuracy_drop"] = victim_drop
                values["utility_flag"] = values["utility_flag"] or victim_drop > UTILITY_DROP_FLAG
            r = with_values(r, values)
        out.append(r)
    return out


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if len(array) > 1
            else 0.0, "min": float(array.min()), "max": float(array.max())}


def over_seeds(plan: CampaignPlan, records: list[dict]) -> list[dict]:
    """Each attack row of each group of experiments that differ only in their seed: mean,
    sample standard deviation (ddof 1), minimum and maximum over the seeds that have run.

    A figure unresolved in a run (None) is left out; where no run resolves it, it is None."""
    groups: dict[str, list[CampaignItem]] = {}
    for item in plan.items:
        groups.setdefault(item.group or item.experiment.name, []).append(item)
    out = []
    for group, items in groups.items():
        if len(items) < 2:
            continue
        seed_of = {item.experiment.name: item.experiment.seed for item in items}
        rows: dict[tuple, list[dict]] = {}
        for r in records:
            if r.get("experiment") in seed_of:
                rows.setdefault(tuple(r.get(k) for k in ROW_KEYS), []).append(r)
        for runs in rows.values():
            first = runs[0]
            row = {"experiment": group, **{k: first.get(k) for k in ROW_KEYS},
                   "seeds": [seed_of[r["experiment"]] for r in runs], "repeats": len(runs),
                   "n_nonmembers": first.get("n_nonmembers"),
                   "min_resolvable_fpr": first.get("min_resolvable_fpr")}
            if first.get(PAPER_KEY) is not None:
                row[PAPER_KEY] = first[PAPER_KEY]
            for key in SPREAD_KEYS:
                values = [r[key] for r in runs if r.get(key) is not None]
                if key in first or values:
                    row[key] = _spread(values)
            if any(r.get("utility_flag") for r in runs):
                row["utility_flagged_seeds"] = [seed_of[r["experiment"]] for r in runs
                                                if r.get("utility_flag")]
            out.append(row)
    return out


def spread_cell(row: dict, key: str, fmt: str) -> str:
    """`mean ± std [min, max]` over the seeds, or a single record's cell."""
    value = row.get(key)
    if isinstance(value, dict):
        return (f"{fmt.format(value['mean'])} ± {fmt.format(value['std'])} "
                f"[{fmt.format(value['min'])}, {fmt.format(value['max'])}]")
    if key == "seeds" and isinstance(value, list):
        return ",".join(map(str, value))
    return format_cell(row, key, fmt)


def spread_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(title for _, title, _ in SPREAD_COLUMNS) + " |"
    rule = "|" + "|".join("---" for _ in SPREAD_COLUMNS) + "|"
    body = ["| " + " | ".join(spread_cell(r, key, fmt) for key, _, fmt in SPREAD_COLUMNS)
            + " |" for r in rows]
    return "\n".join([head, rule, *body]) + "\n"


def flagged_lines(records: list[dict]) -> list[str]:
    """One line per active experiment that cost the global model more than 5 points."""
    seen, lines = set(), []
    for r in records:
        if r.get("utility_flag") and r["experiment"] not in seen:
            seen.add(r["experiment"])
            line = (f"- {r['experiment']} ({r.get('mode')}): global test accuracy "
                    f"{r['global_test_accuracy']:.3f} against "
                    f"{r['passive_twin_global_test_accuracy']:.3f} "
                    f"passive ({r['passive_twin']}), a drop of "
                    f"{r['global_test_accuracy_drop'] * 100:.1f} points")
            if r.get("victim_test_accuracy_drop") is not None:
                line += (f"; the isolated victim's model {r['isolated_test_accuracy']:.3f}, "
                         f"{r['victim_test_accuracy_drop'] * 100:.1f} points below")
            lines.append(line)
    return lines


def campaign_markdown(records: list, spread: list[dict]) -> str:
    """results.md: every run's rows (the GAN records in a table of their own measures: victim
    share, relative distance, success), the strongest attack of each experiment, the DP audits,
    then the flags and the mean and spread over seeds."""
    gan = [r for r in records if r.get("attack") == "gan"]
    inversion = [r for r in records if is_reconstruction(r)]
    membership = [r for r in records if r.get("attack") != "gan" and not is_reconstruction(r)]
    text = (markdown_table(membership, with_flags(membership, CAMPAIGN_COLUMNS))
            if membership or not (gan or inversion) else "")
    if inversion:
        text += ("\n" if text else "") + markdown_table(inversion, INVERSION_COLUMNS)
    if gan:
        from fedattack.reconstruction import GAN_COLUMNS

        text += ("\n" if text else "") + markdown_table(gan, GAN_COLUMNS)
    strongest = strongest_rows(membership)
    if strongest:
        text += ("\nThe strongest attack of each experiment, chosen on one half of each "
                 "victim's targets (the highest TPR there at 1% FPR, or at the smallest FPR the "
                 "half resolves, then AUC), with its figures from the other half:\n\n"
                 + markdown_table(strongest, STRONGEST_COLUMNS))
    audits = summary_lines(membership)
    if audits:
        text += "\n" + "".join(f"{line}\n" for line in audits)
    flags = flagged_lines(records)
    if flags:
        text += (f"\nFlagged: active attacks that cost the global model more than "
                 f"{UTILITY_DROP_FLAG * 100:.0f} points of test accuracy against their passive "
                 "twin (an attack the participants would notice):\n\n" + "\n".join(flags) + "\n")
    if spread:
        text += ("\nMean ± sample standard deviation [min, max] over seeds:\n\n"
                 + spread_table(spread))
    return text


def write_campaign_results(out_dir: Path, records: list,
                           plan: CampaignPlan | None = None) -> None:
    spread = over_seeds(plan, records) if plan is not None else []
    write_rows(inside(out_dir, RESULTS_JSON), records)
    if spread:
        write_json(inside(out_dir, OVER_SEEDS_JSON), spread)
    write_atomic(inside(out_dir, RESULTS_MD), campaign_markdown(records, spread))
    if len({r.get("defence") for r in records if r.get("attack") != "gan"}) > 1:
        from fedattack.reporting import plot_privacy_utility

        figures = inside(out_dir, "figures")
        figures.mkdir(exist_ok=True)
        plot_privacy_utility(records, figures / "privacy-utility.png")


def training_key(exp: Experiment) -> str:
    """What the target model's training depends on: the experiment less its name, `attack` and
    `inversion` (read only by the attack stages)."""
    return json.dumps(exp.model_dump(mode="json", exclude={"name", "attack", "inversion"}),
                      sort_keys=True)


TRAINING_OUTPUTS = ("splits", "snapshots")


def share_training(exp: Experiment, source: Path, run_dir: Path) -> bool:
    """Give run_dir (of `exp`, not yet trained) a copy of the finished training in `source`
    (an experiment with the same training_key): its splits and snapshots, then run.json, written
    last so that an interrupted copy leaves no finished record. Returns whether it copied."""
    from fedattack.experiment import RUN_FILE, claim_run_dir
    from fedattack.runner import discard_unfinished, finished_record

    record = finished_record(source)
    if record is None or finished_record(run_dir) is not None:
        return False
    claim_run_dir(exp, run_dir)
    discard_unfinished(run_dir)
    for name in TRAINING_OUTPUTS:
        shutil.rmtree(run_dir / name, ignore_errors=True)
        if (source / name).is_dir():
            shutil.copytree(source / name, run_dir / name)
    write_json(inside(run_dir, RUN_FILE),
               {**record, "experiment": exp.name, "trained_in": record.get("trained_in",
                                                                          source.name)})
    return True


def selected(plan: CampaignPlan, only: Sequence[str] | None) -> set[str]:
    """The expanded names of the experiments `only` names (an expanded name, or an entry's name
    for all its sweep points and seeds); every experiment when `only` is None. ConfigError (one
    line, naming the campaign's experiments) for a name it does not have."""
    if only is None:
        return {item.experiment.name for item in plan.items}
    chosen: set[str] = set()
    for wanted in only:
        match = {item.experiment.name for item in plan.items
                 if wanted in (item.experiment.name, item.entry)}
        if not match:
            entries = dict.fromkeys(item.entry for item in plan.items)
            raise ConfigError(f"--only {wanted!r}: campaign {plan.name!r} has no such experiment "
                              f"(entries: {', '.join(map(str, entries))})")
        chosen |= match
    return chosen


def run_campaign(plan: CampaignPlan, out_dir: str | Path, show_progress: bool = True,
                 verbose: bool = False, log: Callable[[str], None] | None = None,
                 only: Sequence[str] | None = None) -> list:
    """Run the campaign's experiments in turn into `out_dir/<name>/`; return all result records.

    Finished experiments are skipped (their results are read back, never rewritten). The
    campaign's results.json and results.md are rewritten after each experiment, so an
    interrupted campaign still shows what it has. `only` (names, see `selected`) runs those
    experiments alone; the others are left as they are, and those already finished still
    count in the campaign's results.
    """
    from fedattack.runner import console

    log = log or console.print
    out_dir = Path(out_dir)
    chosen = selected(plan, only)
    with exclusive(out_dir):
        return _run_items(plan, out_dir, show_progress, verbose, log, chosen)


def _run_items(plan: CampaignPlan, out_dir: Path, show_progress: bool, verbose: bool,
               log: Callable[[str], None], chosen: set[str]) -> list:
    from fedattack.runner import experiment_finished, run_experiment

    claim_campaign_dir(plan, out_dir)
    records: list = []
    twins = passive_twins(plan)
    trained: dict[str, Path] = {}  # training_key -> the run dir whose training finished
    total = len(plan.items)
    for k, item in enumerate(plan.items, 1):
        exp = item.experiment
        run_dir = child_dir(out_dir, exp.name)
        finished = experiment_finished(exp, run_dir)
        if not finished and exp.name not in chosen:
            log(f"{plan.name}: experiment {k} of {total}: {exp.name} (not selected, skipped)")
            continue
        state = "finished, skipped" if finished else "running"
        log(f"{plan.name}: experiment {k} of {total}: {exp.name} ({state})")
        key = training_key(exp)
        if key in trained and share_training(exp, trained[key], run_dir):
            log(f"{exp.name}: target model shared with {trained[key].name}")
        record, results = run_experiment(exp, run_dir, show_progress=show_progress,
                                         verbose=verbose)
        trained.setdefault(key, run_dir)
        if exp.scenario == "federated":  # results written before the field existed lack it
            final = record.get("global_test_accuracy", record["history"][-1]["test_accuracy"])
            results = [r if "global_test_accuracy" in r
                       else with_values(r, {"global_test_accuracy": final}) for r in results]
        records = with_utility_drop(records + annotate(item, results), twins)
        write_campaign_results(out_dir, records, plan)
    return records

