"""`fedattack report`: one self-contained report.html per run and the records at risk as CSV
(issue 28), written from the committed quickstart run (docs/results/quickstart/), and loaded in
a real headless browser (Debian's chromium): no console error, every image rendered, a
screenshot taken."""

import csv
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fedattack.cli import app
from fedattack.data.splits import load_knowledge, load_membership
from fedattack.report import REPORT_HTML, RISK_CSV, NotReportable, write_report
from fedattack.report.html import RISK_ROWS_SHOWN
from fedattack.results import read_rows
from tests.system_tools import needs

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "docs" / "results" / "quickstart"


@pytest.fixture
def run_dir(tmp_path):
    folder = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, folder, ignore=shutil.ignore_patterns(REPORT_HTML, RISK_CSV))
    return folder


def risk_table(run_dir: Path) -> list[dict]:
    with open(run_dir / RISK_CSV, newline="") as f:
        return list(csv.DictReader(f))


def test_the_report_leads_with_the_strongest_attack_chosen_on_the_selection_half(run_dir):
    page = write_report(run_dir).read_text()
    rows = read_rows(run_dir / "results.json")
    strongest = [r for r in rows if r.strongest]
    assert len(strongest) == 1
    held = strongest[0].held_out
    headline = re.search(r'<div class="headline" id="headline">(.*?)</div>', page, re.S).group(1)
    assert f"<b>{strongest[0].attack}</b>" in headline
    low, high = held.auc_ci
    assert f"AUC {held.auc:.3f} [{low:.3f}, {high:.3f}]" in headline
    # the committed run's report half (250 non-members) cannot resolve 1% FPR: the headline
    # gives all the targets' figure and says so
    assert held.tpr_at_1pct_fpr is None
    every = strongest[0].figures
    low, high = every.tpr_at_1pct_fpr_ci
    assert f"<b>{every.tpr_at_1pct_fpr:.3f} [{low:.3f}, {high:.3f}]</b> on all" in headline
    assert "cannot resolve 1% FPR" in headline
    for row in rows:  # the results table, every attack with its AUC interval
        assert f"{row.figures.auc:.3f} [{row.figures.auc_ci[0]:.3f}" in page
    assert "one participant (it sees only the global models it receives)" in page


def test_the_page_is_self_contained(run_dir):
    page = write_report(run_dir).read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), \
        [s[:40] for s in sources if not s.startswith("data:")]
    assert "<script" not in page
    # the accuracy per round, the ROC and the attacks' training curves
    assert len(sources) >= 3 and "figures/roc.png" in page


def test_the_records_at_risk_are_every_target_with_its_membership_partition_score_and_rank(
        run_dir):
    write_report(run_dir)
    table = risk_table(run_dir)
    knowledge = load_knowledge(run_dir, "all")
    truth = load_membership(run_dir)
    victim = truth.victim("all")
    assert sorted(int(r["record"]) for r in table) == sorted(knowledge.targets.tolist())
    members = set(victim.target_members.tolist())
    for r in table:
        record = int(r["record"])
        assert int(r["member"]) == (record in members)
        if record in members:
            assert record in truth.partitions[int(r["partition"])]
        else:
            assert r["partition"] == "-"
    order = {rec: i for i, rec in enumerate(knowledge.targets.tolist())}
    for name in {r.attack for r in read_rows(run_dir / "results.json")}:
        scores = np.load(run_dir / "attacks" / f"{name}-scores.npy")
        written = np.array([float(r[f"{name} score"]) for r in table])
        expected = scores[[order[int(r["record"])] for r in table]]
        np.testing.assert_allclose(written, expected, rtol=1e-5)
        ranks = np.array([int(r[f"{name} rank"]) for r in table])
        top = int(np.argmax(expected))
        assert ranks[top] == 1 and ranks.max() <= len(table)
        # a higher score never has a worse rank
        by_score = np.argsort(-expected, kind="stable")
        assert np.all(np.diff(ranks[by_score]) >= 0)
    strongest = next(r.attack for r in read_rows(run_dir / "results.json") if r.strongest)
    assert [int(r[f"{strongest} rank"]) for r in table[:3]] == sorted(
        int(r[f"{strongest} rank"]) for r in table[:3])
    page = (run_dir / REPORT_HTML).read_text()
    assert page.count("<tr>") >= RISK_ROWS_SHOWN


def test_provenance_is_the_runs_where_it_recorded_one(run_dir):
    page = write_report(run_dir).read_text()
    assert "recorded by the run" in page
    assert re.search(r"<td>git_commit</td><td>[0-9a-f]{40}", page)
    for key in ("fedattack", "flwr", "torch", "python", "seed", "device", "machine"):
        assert f"<td>{key}</td>" in page
    (run_dir / "provenance.json").unlink()
    page = write_report(run_dir).read_text()
    assert "the run recorded none" in page


def test_a_folder_without_results_is_refused_in_one_line(tmp_path):
    with pytest.raises(NotReportable):
        write_report(tmp_path)
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1


def test_the_command_writes_the_report_and_names_it(run_dir):
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"report: {run_dir / REPORT_HTML}"
    assert (run_dir / RISK_CSV).is_file()


# -- in a real browser ------------------------------------------------------------------------

CHECK_IMAGES = """<script>window.addEventListener("load", () => {
  const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length;
  document.body.setAttribute("data-images", document.images.length + "/" + broken);
});</script></body>"""


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                           *args], capture_output=True, text=True, timeout=timeout)


def console_messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def loaded(page: Path) -> tuple[str, list[str]]:
    """The `data-images` attribute the check script sets once the page has loaded ("N/broken"),
    and the console messages of the page."""
    probe = page.with_name("probe.html")
    probe.write_text(page.read_text().replace("</body>", CHECK_IMAGES))
    done = chromium("--dump-dom", probe.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    found = re.search(r'data-images="(\d+)/(\d+)"', done.stdout)
    assert found, "the check script did not run: " + done.stdout[-500:]
    return found.group(0), console_messages(done.stderr)


@needs("chromium")
def test_the_browser_sees_a_console_error_and_a_broken_image(tmp_path):
    """The browser checks below can fail: a page with a console error and a broken image."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="data:image/png;base64,AAAA">'
                   '<script>console.error("boom")</script></body></html>')
    images, console = loaded(bad)
    assert images == 'data-images="1/1"'
    assert any("boom" in line for line in console)


@needs("chromium")
def test_the_report_loads_in_chromium_with_every_image_and_no_console_error(run_dir, tmp_path):
    page = write_report(run_dir)
    images, console = loaded(page)
    count = len(re.findall(r"<img ", page.read_text()))
    assert images == f'data-images="{count}/0"' and count >= 3
    assert console == []
    shot = tmp_path / "report.png"
    done = chromium(f"--screenshot={shot}", "--window-size=1280,2400", page.as_uri())
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]
    assert console_messages(done.stderr) == []
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2400, 1280)
    assert pixels[..., :3].std() > 0.05  # text and figures, not a blank page


def test_a_campaigns_report_links_every_experiments_and_leads_with_their_strongest(tmp_path):
    campaign = tmp_path / "camp"
    shutil.copytree(QUICKSTART, campaign / "quickstart",
                    ignore=shutil.ignore_patterns(REPORT_HTML, RISK_CSV))
    (campaign / "campaign.yaml").write_text("name: camp\nexperiments: []\n")
    shutil.copy(QUICKSTART / "results.json", campaign / "results.json")
    (campaign / "gan-only").mkdir()  # an unfinished experiment: no results, no report
    page = write_report(campaign).read_text()
    assert (campaign / "quickstart" / REPORT_HTML).is_file()
    assert (campaign / "quickstart" / RISK_CSV).is_file()
    assert '<a href="quickstart/report.html">quickstart</a>' in page
    strongest = next(r for r in read_rows(QUICKSTART / "results.json") if r.strongest)
    assert f"<b>{strongest.attack}</b>" in page
    assert not (campaign / "gan-only" / REPORT_HTML).exists()


def test_a_stand_alone_models_history_counts_epochs(run_dir):
    """run.json of a stand-alone model counts epochs, not rounds."""
    run = json.loads((run_dir / "run.json").read_text())
    run["history"] = [{"epoch": h["round"], **{k: v for k, v in h.items() if k != "round"}}
                      for h in run["history"]]
    (run_dir / "run.json").write_text(json.dumps(run))
    page = write_report(run_dir).read_text()
    assert "<h2>The trained model per epoch</h2>" in page and "<th>epoch</th>" in page
