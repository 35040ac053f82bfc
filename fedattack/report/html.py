"""One self-contained HTML report of a finished membership-inference run (report.html beside
results.json), and the per-record risk table (records-at-risk.csv).

The report reads only what the run wrote: results.json (the table, the strongest attack as
:func:`fedattack.results.mark_strongest` chose it on the selection half of the targets, the DP
audit), run.json (the global model's accuracy per round), config.yaml (seed, device, the
federation in words), the figures, the scores in attacks/ and the splits (each target's record
id, partition and membership), and provenance.json where the run wrote one. Images are embedded
as base64 PNG, so the file can be handed on alone; it loads nothing from the network.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedattack.attack_registry import KNOWLEDGE
from fedattack.audit import summary_lines
from fedattack.io import read_json, write_atomic, write_json
from fedattack.report.provenance import PROVENANCE_JSON, current
from fedattack.reporting import (
    FIGURES,
    RESULTS_JSON,
    TABLE_COLUMNS,
    format_cell,
    strongest_rows,
    with_flags,
)
from fedattack.results import MEAN_PREFIX, ResultRow, read_rows

REPORT_HTML = "report.html"
RISK_CSV = "records-at-risk.csv"
RISK_ROWS_SHOWN = 25  # the report's table: the records the strongest attack ranks highest
RUN_JSON = "run.json"
CONFIG_YAML = "config.yaml"


class NotReportable(ValueError):
    """A directory without a finished membership-inference run."""


def write_provenance(run_dir: str | Path, device: str | None) -> None:
    """provenance.json of the process that ran the experiment (called at the end of a run)."""
    write_json(Path(run_dir) / PROVENANCE_JSON, current(device))


def read_provenance(run_dir: Path) -> tuple[dict[str, Any], bool]:
    """The run's provenance, and whether it is the run's own (False: this process's, the run
    having written none)."""
    path = run_dir / PROVENANCE_JSON
    if path.is_file():
        return read_json(path), True
    return current(), False


# -- the records at risk ----------------------------------------------------------------------

def _victim_folder(run_dir: Path, victim: str, several: bool) -> Path:
    return run_dir / "attacks" / (victim if several else "")


def risk_rows(run_dir: Path, rows: list[ResultRow]) -> tuple[list[str], list[dict[str, Any]]]:
    """Per victim and target record: its id (index into the dataset), the partition holding it
    (``-`` for a non-member), its membership, and each attack's score and rank (1: the record
    the attack deems most likely a member). Sorted by victim, then by the strongest attack's
    rank (the first attack's where none was chosen)."""
    from fedattack.data.splits import load_knowledge, load_membership

    victims = list(dict.fromkeys(r.victim for r in rows if not r.victim.startswith(MEAN_PREFIX)))
    attacks = list(dict.fromkeys(r.attack for r in rows))
    chosen = next((r.attack for r in rows if r.strongest), attacks[0] if attacks else None)
    truth = load_membership(run_dir)
    owner = {int(i): p for p, part in enumerate(truth.partitions) for i in part}
    out: list[dict[str, Any]] = []
    for victim in victims:
        targets = load_knowledge(run_dir, victim).targets
        held = truth.victim(victim)
        members = set(held.target_members.tolist())
        folder = _victim_folder(run_dir, victim, len(victims) > 1)
        scores = {}
        for name in attacks:
            path = folder / f"{name}-scores.npy"
            if path.is_file():
                values = np.load(path, allow_pickle=False)
                if len(values) != len(targets):
                    raise NotReportable(f"{path}: {len(values)} scores for {len(targets)} "
                                        "targets")
                scores[name] = values
        ranks = {name: _ranks(s) for name, s in scores.items()}
        block = []
        for i, record in enumerate(targets.tolist()):
            member = record in members
            row = {"victim": victim, "record": record,
                   "partition": owner.get(record, "-") if member else "-",
                   "member": int(member)}
            for name in scores:
                row[f"{name} score"] = float(scores[name][i])
                row[f"{name} rank"] = int(ranks[name][i])
            block.append(row)
        key = f"{chosen} rank" if chosen in scores else None
        if key:
            block.sort(key=lambda r: r[key])
        out += block
    names = [n for n in attacks if any(f"{n} score" in r for r in out)]
    header = ["victim", "record", "partition", "member",
              *[f"{n} {what}" for n in names for what in ("score", "rank")]]
    return header, out


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1 for the highest score; ties share the best rank of their group."""
    from scipy.stats import rankdata

    return rankdata(-np.asarray(scores, dtype=np.float64), method="min").astype(int)


def write_risk_csv(path: Path, header: list[str], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
    write_atomic(path, buffer.getvalue())


# -- figures ----------------------------------------------------------------------------------

def _png(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _step(history: list[dict]) -> str:
    """What run.json's history counts: rounds (federated) or epochs (a stand-alone model)."""
    return "round" if history and "round" in history[0] else "epoch"


def _steps(history: list[dict]) -> list:
    key = _step(history)
    return [h.get(key, i) for i, h in enumerate(history) if "test_accuracy" in h]


def accuracy_figure(history: list[dict]) -> str | None:
    """The trained model's train and test accuracy per round (or epoch), as a data: URL."""
    rounds = _steps(history)
    if not rounds:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("train_accuracy", "train (participants' records)"),
                       ("test_accuracy", "test (held-out records)")):
        values = [h.get(key) for h in history if "test_accuracy" in h]
        if all(v is not None for v in values):
            ax.plot(rounds, values, marker=".", label=label)
    ax.set_xlabel(_step(history))
    ax.set_ylabel("accuracy of the trained model")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def run_figures(run_dir: Path) -> list[tuple[str, str]]:
    """(caption, data URL) of the run's ROC and attack-training figures, every victim's."""
    folder = run_dir / FIGURES
    found = sorted(folder.glob("roc.png")) + sorted(folder.glob("*/roc.png"))
    found += sorted(folder.glob("training-*.png")) + sorted(folder.glob("*/training-*.png"))
    return [(str(p.relative_to(run_dir)), _png(p)) for p in found]


# -- words ------------------------------------------------------------------------------------

MODES = {
    "passive": "follows the protocol and only reads what it receives",
    "gradient-ascent": "is active: it moves the model up the loss on the target records before "
                       "sending it on (gradient ascent), to make members stand out",
    "isolating": "is active: it sends each victim its own last model, isolating it from the "
                 "others' updates",
    "isolating-gradient-ascent": "is active: it isolates each victim and applies gradient "
                                 "ascent on the target records",
}


def threat_model(rows: list[ResultRow], config: dict[str, Any]) -> list[str]:
    """The threat model in sentences, from the rows and the resolved experiment."""
    first = rows[0]
    fed = config.get("federation") or {}
    data = config.get("data") or {}
    model = config.get("model") or {}
    dataset = data.get("dataset")
    if isinstance(dataset, dict):
        dataset = ", ".join(f"{k}: {v}" for k, v in dataset.items())
    strategy = fed.get("strategy", "fedavg")
    if isinstance(strategy, dict):
        strategy = strategy.get("name", "fedavg")
    out = []
    if first.scenario == "federated":
        out.append(f"A federation of {fed.get('num_participants', '?')} participants trains a "
                   f"{model.get('arch', '?')} model on {dataset} for {fed.get('rounds', '?')} "
                   f"rounds with {strategy}.")
    else:
        out.append(f"A {first.scenario} {model.get('arch', '?')} model is trained on {dataset}.")
    who = {"global": "the aggregator (it sees every participant's upload at the recorded "
                     "rounds)",
           "local": "one participant (it sees only the global models it receives)",
           "standalone": "anyone holding the trained model"}.get(first.attacker, first.attacker)
    out.append(f"The attacker is {who}; it {MODES.get(first.mode, first.mode)}.")
    if first.observed:
        rounds = (first.snapshots or "the recorded rounds").replace(",", ", ")
        out.append(f"It reads {first.observed} at {rounds}.")
    victims = sorted({r.victim for r in rows if not r.victim.startswith(MEAN_PREFIX)})
    out.append("Its question, per target record: was it in the training data of "
               + (", ".join(victims) if victims != ["all"] else "the federation (any participant)")
               + "? Each attack answers with a score; membership is read only to evaluate them.")
    for knowledge in dict.fromkeys(r.knowledge for r in rows):
        names = ", ".join(dict.fromkeys(r.attack for r in rows if r.knowledge == knowledge))
        out.append(f"{names}: {knowledge} knowledge, "
                   f"{KNOWLEDGE.get(knowledge, 'as the attack declares')}.")
    return out


def headline(rows: list[ResultRow]) -> list[str]:
    """The strongest attack's figures on the report half, and, under DP, the audit beside the
    accountant's epsilon."""
    out = []
    for r in strongest_rows(rows):
        held = r["held_out"]
        auc = format_cell(held, "auc", "{:.3f}")
        chosen = (f"Strongest attack: <b>{html.escape(r['attack'])}</b> "
                  f"({html.escape(r['victim'])}), chosen on "
                  f"{html.escape(r['strongest_chosen_on'])}.")
        if held.get("tpr_at_1pct_fpr") is not None:
            tpr = format_cell(held, "tpr_at_1pct_fpr", "{:.3f}")
            out.append(f"{chosen} TPR at 1% FPR <b>{html.escape(tpr)}</b>, AUC "
                       f"{html.escape(auc)}, on the {held['n_members']} + "
                       f"{held['n_nonmembers']} targets it was not chosen on.")
        else:  # the report half alone cannot resolve 1% FPR: all the targets' figure, said so
            tpr = format_cell(r, "tpr_at_1pct_fpr", "{:.3f}")
            out.append(f"{chosen} TPR at 1% FPR <b>{html.escape(tpr)}</b> on all "
                       f"{r['n_members']} + {r['n_nonmembers']} targets (the "
                       f"{held['n_nonmembers']} non-members of the half it was not chosen on "
                       f"cannot resolve 1% FPR; half of these targets took part in the "
                       f"choice); AUC {html.escape(auc)} on that half alone.")
    out += [html.escape(line) for line in summary_lines(rows)]
    if not out:
        out.append("No attack was chosen as the strongest (results written before schema "
                   "version 2).")
    return out


# -- the page ---------------------------------------------------------------------------------

STYLE = """
body { font-family: sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; }
th { background: #f0f0f0; }
.headline { background: #fff4e5; border-left: 4px solid #e68a00; padding: 0.6em 1em; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 520px; }
figcaption { font-size: 0.8em; color: #555; }
"""


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(run_dir: Path, rows: list[ResultRow], config: dict[str, Any], run: dict[str, Any],
           risk: tuple[list[str], list[dict[str, Any]]], provenance: dict[str, Any],
           own: bool) -> str:
    name = rows[0].experiment
    columns = with_flags(rows, TABLE_COLUMNS)
    results = _table([t for _, t, _ in columns],
                     [[format_cell(r, k, f) for k, _, f in columns] for r in rows])
    header, records = risk
    shown = [[r.get(h, "") if not isinstance(r.get(h), float) else f"{r[h]:.4g}"
              for h in header] for r in records[:RISK_ROWS_SHOWN]]
    accuracy = accuracy_figure(run.get("history", []))
    figures = run_figures(run_dir)
    history = run.get("history", [])
    step = _step(history)
    if accuracy:
        figures.insert(0, (f"the trained model's accuracy per {step} (run.json)", accuracy))
    images = "".join(f'<figure><img src="{url}" alt="{html.escape(caption)}">'
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>"
                     for caption, url in figures)
    last = (run.get("history") or [{}])[-1]
    tested = [h for h in history if "test_accuracy" in h]
    per_round = _table([step, "train accuracy", "test accuracy"],
                       [[n, f"{h.get('train_accuracy', float('nan')):.3f}",
                         f"{h['test_accuracy']:.3f}"]
                        for n, h in zip(_steps(history), tested, strict=True)])
    prov = {**provenance, "seed": config.get("seed"),
            "device": provenance.get("device") or config.get("device")}
    prov_note = ("recorded by the run" if own else
                 "the run recorded none: these are the versions of the process that wrote "
                 "this report")
    paragraphs = "".join(f"<p>{html.escape(s)}</p>" for s in threat_model(rows, config))
    heads = "".join(f"<p>{h}</p>" for h in headline(rows))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fedattack report: {html.escape(name)}</title>
<style>{STYLE}</style></head>
<body>
<h1>fedattack report: {html.escape(name)}</h1>
<div class="headline" id="headline">{heads}</div>
<h2>Threat model</h2>
{paragraphs}
<h2>Results</h2>
<p>Every attack scores the same targets; 95% bootstrap intervals in brackets; <code>n/a
(&lt;5/n)</code>: n non-members cannot resolve that FPR (five false positives at least).</p>
{results}
<h2>Figures</h2>
{images}
<h2>The trained model per {step}</h2>
<p>Last round: train accuracy {last.get('train_accuracy', float('nan')):.3f}, test accuracy
{last.get('test_accuracy', float('nan')):.3f}.</p>
{per_round}
<h2>Records at risk</h2>
<p>The {min(RISK_ROWS_SHOWN, len(records))} target records ranked highest by the strongest
attack (rank 1: most likely a member), of {len(records)}; every target with every attack's
score and rank is in <code>{RISK_CSV}</code> beside this file. Partition: the participant
whose training data holds the record (<code>-</code> for a non-member).</p>
{_table(header, shown)}
<h2>Provenance</h2>
<p>{html.escape(prov_note)}.</p>
{_table(["", ""], [[k, v] for k, v in prov.items()])}
</body></html>
"""


CAMPAIGN_YAML = "campaign.yaml"


def render_campaign(out_dir: Path, rows: list[ResultRow], reports: dict[str, Path],
                    provenance: dict[str, Any], own: bool) -> str:
    from fedattack.campaign import CAMPAIGN_COLUMNS

    columns = with_flags(rows, CAMPAIGN_COLUMNS)
    table = _table([t for _, t, _ in columns],
                   [[format_cell(r, k, f) for k, _, f in columns] for r in rows])
    heads = "".join(f"<p>{h}</p>" for h in headline(rows))
    figure = out_dir / FIGURES / "privacy-utility.png"
    image = (f'<figure><img src="{_png(figure)}" alt="privacy and utility per defence">'
             f"<figcaption>figures/privacy-utility.png</figcaption></figure>"
             if figure.is_file() else "")
    links = "".join(f'<li><a href="{html.escape(path.relative_to(out_dir).as_posix())}">'
                    f"{html.escape(name)}</a></li>" for name, path in reports.items())
    prov_note = ("recorded by the campaign's first run" if own else
                 "no run recorded one: these are the versions of the process that wrote this "
                 "report")
    name = out_dir.name
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>fedattack campaign report: {html.escape(name)}</title>
<style>{STYLE}</style></head>
<body>
<h1>fedattack campaign report: {html.escape(name)}</h1>
<div class="headline" id="headline">{heads}</div>
<h2>Results</h2>
<p>Every experiment's rows; 95% bootstrap intervals in brackets.</p>
{table}
{image}
<h2>Each experiment's report</h2>
<p>The threat model, figures, accuracy per round and records at risk of each experiment.</p>
<ul>{links}</ul>
<h2>Provenance</h2>
<p>{html.escape(prov_note)}.</p>
{_table(["", ""], [[k, v] for k, v in provenance.items()])}
</body></html>
"""


def write_campaign_report(out_dir: Path) -> Path:
    """report.html of every finished experiment of a campaign, and the campaign's own: every
    experiment's strongest attack, the results table, the privacy-utility figure, links."""
    reports = {}
    for child in sorted(p for p in out_dir.iterdir() if (p / RESULTS_JSON).is_file()):
        try:
            reports[child.name] = write_report(child)
        except NotReportable:  # e.g. a GAN experiment: no membership table
            continue
    records = read_json(out_dir / RESULTS_JSON) if (out_dir / RESULTS_JSON).is_file() else []
    try:
        rows = [ResultRow.from_dict(r) for r in records if r.get("attack") != "gan"]
    except (ValueError, TypeError, KeyError) as err:
        raise NotReportable(f"{out_dir / RESULTS_JSON}: not campaign results ({err})") from None
    if not rows:
        raise NotReportable(f"{out_dir}: no finished membership-inference experiment yet")
    first = next(iter(reports.values()), None)
    provenance, own = read_provenance(first.parent) if first else (current(), False)
    write_atomic(out_dir / REPORT_HTML, render_campaign(out_dir, rows, reports, provenance, own))
    return out_dir / REPORT_HTML


def write_report(run_dir: str | Path) -> Path:
    """report.html and records-at-risk.csv of a finished membership-inference run (or, for a
    campaign's folder, of each finished experiment and the campaign's own report.html); the path
    of the report. NotReportable (one line) for a directory that has no such run."""
    run_dir = Path(run_dir)
    if (run_dir / CAMPAIGN_YAML).is_file():
        return write_campaign_report(run_dir)
    if not (run_dir / RESULTS_JSON).is_file():
        raise NotReportable(f"{run_dir}: no {RESULTS_JSON}: not a finished run directory (a "
                            "campaign's runs are its sub-folders)")
    try:
        rows = read_rows(run_dir / RESULTS_JSON)
    except (ValueError, TypeError, KeyError) as err:
        raise NotReportable(f"{run_dir / RESULTS_JSON}: not membership-inference results "
                            f"({err})") from None
    if not rows:
        raise NotReportable(f"{run_dir / RESULTS_JSON}: no result row")
    config = {}
    if (run_dir / CONFIG_YAML).is_file():
        config = yaml.safe_load((run_dir / CONFIG_YAML).read_text()) or {}
    run = read_json(run_dir / RUN_JSON) if (run_dir / RUN_JSON).is_file() else {}
    header, records = risk_rows(run_dir, rows)
    write_risk_csv(run_dir / RISK_CSV, header, records)
    provenance, own = read_provenance(run_dir)
    page = render(run_dir, rows, config, run, (header, records), provenance, own)
    write_atomic(run_dir / REPORT_HTML, page)
    return run_dir / REPORT_HTML
