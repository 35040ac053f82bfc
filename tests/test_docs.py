"""The documentation (issue 28): the README stays short, the generated parts of the README and the
docs site are what `python docs/gen.py` makes from the code and the committed quickstart run, and
the site builds with MkDocs with warnings as errors."""

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def load_gen():
    spec = importlib.util.spec_from_file_location("docs_gen", ROOT / "docs" / "gen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_is_short():
    assert len(README.read_text().splitlines()) <= 200


def test_the_readme_links_to_pages_that_exist():
    links = re.findall(r"\]\(([^)#]+)\)", README.read_text())
    local = [link for link in links if "://" not in link]
    assert local and [link for link in local if not (ROOT / link).exists()] == []


def test_every_generated_part_is_what_the_script_makes():
    assert load_gen().stale() == [], "run: python docs/gen.py"


def test_the_readme_quotes_the_committed_run_and_follows_a_changed_one(tmp_path, monkeypatch):
    gen = load_gen()
    rows = json.loads((gen.QUICKSTART / "results.json").read_text())
    white = next(r for r in rows if r["attack"] == "whitebox")
    low, high = white["auc_ci"]
    assert f"{white['auc']:.3f} [{low:.3f}, {high:.3f}]" in README.read_text()
    # a run with another figure makes the README stale
    copy = tmp_path / "quickstart"
    shutil.copytree(gen.QUICKSTART, copy)
    white["auc"] = 0.5
    (copy / "results.json").write_text(json.dumps(rows))
    monkeypatch.setattr(gen, "QUICKSTART", copy)
    assert README in gen.stale()


def test_the_check_mode_names_a_stale_page_and_fails(tmp_path, monkeypatch):
    gen = load_gen()
    page = tmp_path / "cli.md"
    page.write_text("# stale\n")
    monkeypatch.setattr(gen, "CLI_PAGE", page)
    assert gen.main(["--check"]) == 1


def test_the_config_reference_has_every_key_of_the_experiment_model():
    from fedattack.config import Experiment, FederationConfig

    page = (ROOT / "docs" / "reference" / "config.md").read_text()
    for model in (Experiment, FederationConfig):
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in page, name


def test_the_cli_reference_has_every_command():
    import typer

    from fedattack.cli import app

    page = (ROOT / "docs" / "reference" / "cli.md").read_text()
    for name in typer.main.get_command(app).commands:
        assert f"## `fedattack {name}`" in page


def test_mkdocs_builds_the_site_with_warnings_as_errors(tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "reference/config/index.html", "reference/cli/index.html",
                 "reference/api/index.html", "explanation/dp-audit/index.html"):
        assert (site / page).is_file(), page
    api = (site / "reference" / "api" / "index.html").read_text()
    assert "write_report" in api  # from the docstrings
    audit = (site / "explanation" / "dp-audit" / "index.html").read_text()
    assert "Clopper-Pearson" in audit


@pytest.fixture
def broken_docs(tmp_path):
    """A copy of the site's sources with a link to a page that does not exist."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text() + "\n[gone](no-such-page.md)\n")
    return copy


def test_a_broken_link_fails_the_build(broken_docs, tmp_path):
    mkdocs = Path(sys.executable).parent / "mkdocs"
    done = subprocess.run([str(mkdocs), "build", "--strict", "-d", str(tmp_path / "site")],
                          cwd=broken_docs, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode != 0 and "no-such-page.md" in done.stderr
