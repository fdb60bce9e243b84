"""The page of `dvc plots diff` draws every vega chart in headless Chromium with the network cut."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, Project, html_template, make_project, tiny_params, write_mnist
from dvc_render.base import Renderer  # names each chart's div
from dvc_render.html import PAGE_HTML  # DVC's default page, which loads vega from a CDN

sys.path.insert(0, str(ROOT / "benchmarks"))
from common import HEADLESS  # Chromium's flags, as the project's scripts run it

EXPERIMENTS = ("exp-a", "exp-b")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Element:
    def __init__(self, tag: str, attrs: list[tuple[str, str | None]]):
        self.tag, self.attrs, self.children, self.text = tag, dict(attrs), [], ""

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()


class Tree(HTMLParser):
    """The element tree of an HTML document (Chromium's serialized DOM: every element closed)."""

    def __init__(self, html: str):
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", [])
        self.open = [self.root]
        self.feed(html)
        self.close()

    def handle_starttag(self, tag, attrs):
        element = Element(tag, attrs)
        self.open[-1].children.append(element)
        if tag not in VOID:
            self.open.append(element)

    def handle_startendtag(self, tag, attrs):
        self.open[-1].children.append(Element(tag, attrs))

    def handle_endtag(self, tag):
        if any(e.tag == tag for e in self.open[1:]):
            while self.open.pop().tag != tag:
                pass

    def handle_data(self, data):
        self.open[-1].text += data


def render(chromium: str, page: Path, profile: Path) -> dict[str, Element]:
    """The vega charts of `page` by id, as the DOM holds them after its scripts ran in headless Chromium.

    The charts are the divs whose own script calls vegaEmbed in the page as written (dvc_render's
    layout); vega-embed replaces that script by the chart.
    """
    written = Tree(page.read_text(encoding="utf8")).root.iter()
    ids = {
        div.attrs.get("id")
        for div in written
        if div.tag == "div" and any(c.tag == "script" and "vegaEmbed(" in c.text for c in div.children)
    }
    command = [
        chromium,
        *HEADLESS,
        f"--user-data-dir={profile}",
        "--virtual-time-budget=20000",  # ms
        "--dump-dom",
        page.as_uri(),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "</html>" in result.stdout, f"{' '.join(command)}\n{result.stderr[-3000:]}"
    return {e.attrs["id"]: e for e in Tree(result.stdout).root.iter() if e.attrs.get("id") in ids}


def marks(chart: Element) -> list[Element]:
    """What vega drew from the data: the items of its mark groups (axes and legends are other roles)."""
    return [
        item
        for group in chart.iter()
        if group.tag == "g" and "role-mark" in (group.attrs.get("class") or "").split()
        for item in group.children
    ]


def vega_plots(project: Project) -> dict[str, dict]:
    """The plots of the project's dvc.yaml that vega draws, by their div's id in the page.

    Those given with x and y (the others are images): the named top-level plots and the plots a stage
    declares, which dvc names by their path.
    """
    spec = yaml.safe_load((project.path / "dvc.yaml").read_text())
    paths = spec["vars"][0]["paths"]
    entries = [*spec["plots"], *(entry for stage in spec["stages"].values() for entry in stage.get("plots", []))]
    named = {
        re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m[1]], name): props
        for entry in entries
        if isinstance(entry, dict)
        for name, props in entry.items()
    }
    return {Renderer.remove_special_chars(name): props for name, props in named.items() if "y" in (props or {})}


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path. CI installs it (.ci/run), so only outside CI does its absence skip the tests."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None and os.environ.get("CI"):
        pytest.fail("chromium is not on PATH; .ci/run installs it (apt-get install -y chromium)")
    if path is None:
        pytest.skip("no chromium on PATH (install it: apt-get install -y chromium)")
    return path


@pytest.fixture(scope="module")
def experiments(chromium, tmp_path_factory) -> Project:
    """The tiny project after two experiments (2 epochs each), as the README runs them."""
    tmp = tmp_path_factory.mktemp("plots_html")
    checksums = write_mnist(tmp / "mirror")
    project = make_project(tmp / "project", tmp / "mirror", checksums, tiny_params())
    project.dvc("exp", "run", "-n", EXPERIMENTS[0], "-S", "train.epochs=2")
    project.dvc("exp", "run", "-n", EXPERIMENTS[1], "-S", "train.lr=0.002")
    return project


@pytest.fixture(scope="module")
def diff_charts(chromium, experiments, tmp_path_factory) -> dict[str, Element]:
    """The rendered charts of the page `dvc plots diff exp-a exp-b` writes with the project's template."""
    experiments.dvc("plots", "diff", *EXPERIMENTS)
    return render(chromium, experiments.path / "dvc_plots/index.html", tmp_path_factory.mktemp("profile"))


@pytest.mark.slow
def test_every_vega_chart_draws_its_marks_offline(experiments, diff_charts):
    assert sorted(diff_charts) == sorted(vega_plots(experiments))
    for name, chart in diff_charts.items():
        assert any(e.tag == "svg" for e in chart.iter()), f"chart {name} holds no svg"
        assert len(marks(chart)) >= 2, f"chart {name} drew {len(marks(chart))} marks"


@pytest.mark.slow
def test_accuracy_chart_holds_a_line_per_experiment_and_field(experiments, diff_charts):
    (fields,) = vega_plots(experiments)["accuracy"]["y"].values()
    lines = set()
    for mark in marks(diff_charts["accuracy"]):
        # vega labels each line with its first point, e.g. "epoch: 1; ...; rev: exp-a; field: val_accuracy"
        label = dict(part.split(": ", 1) for part in (mark.attrs.get("aria-label") or "").split("; ") if ": " in part)
        if mark.attrs.get("aria-roledescription") == "line mark" and "L" in mark.attrs["d"]:  # a segment: 2 epochs
            lines.add((label.get("rev"), label.get("field")))
    assert {(rev, field) for rev in EXPERIMENTS for field in fields} <= lines


@pytest.mark.slow
def test_dvc_default_page_draws_nothing_offline(chromium, experiments, tmp_path):
    """The marks checks can fail: DVC's own page (scripts from a CDN) leaves every chart blank here."""
    default = tmp_path / "default.html"
    default.write_text(PAGE_HTML)
    experiments.dvc("plots", "diff", *EXPERIMENTS, "--html-template", str(default), "-o", str(tmp_path / "out"))
    blank = render(chromium, tmp_path / "out/index.html", tmp_path / "profile")
    assert sorted(blank) == sorted(vega_plots(experiments))
    assert all(marks(chart) == [] for chart in blank.values())


def test_configured_template_is_in_the_repository_and_loads_nothing():
    template = ROOT / ".dvc" / html_template()
    assert template.is_file(), f"{ROOT / '.dvc/config'}: plots.html_template {html_template()} is not a file"
    text = template.read_text(encoding="utf8")
    assert "{plot_divs}" in text and "{scripts}" not in text  # {scripts} would add DVC's CDN scripts
    scripts = [e for e in Tree(text).root.iter() if e.tag == "script"]
    assert len(scripts) >= 3 and not any("src" in e.attrs for e in scripts)


def test_template_holds_the_versions_of_the_lock_file():
    """index.html was rebuilt (build.py) after the last change of package.json and its lock."""
    template = ROOT / ".dvc" / html_template()
    folder = template.parent
    pinned = json.loads((folder / "package.json").read_text())["dependencies"]
    lock = json.loads((folder / "package-lock.json").read_text())["packages"]
    assert {name: lock[f"node_modules/{name}"]["version"] for name in pinned} == pinned  # exact pins
    built = re.search(r"from package-lock.json \(([^)]*)\)", template.read_text(encoding="utf8"))
    assert built and dict(item.split(" ") for item in built.group(1).split(", ")) == pinned, (
        f"{template} was not built from {folder / 'package-lock.json'}: run python {folder / 'build.py'}"
    )


def x_tick_labels(chart: Element) -> list[str]:
    """The tick labels of the chart's x axis: vega's axis groups say "X-axis ..." in their aria-label."""
    return [
        text.text.strip()
        for axis in chart.iter()
        if "role-axis" in (axis.attrs.get("class") or "").split()
        and (axis.attrs.get("aria-label") or "").startswith("X-axis")
        for labels in axis.iter()
        if "role-axis-label" in (labels.attrs.get("class") or "").split()
        for text in labels.iter()
        if text.tag == "text" and text.text.strip()
    ]


@pytest.mark.slow
def test_every_epoch_axis_counts_whole_epochs(experiments, diff_charts):
    epoch_charts = [name for name, props in vega_plots(experiments).items() if props.get("x") == "epoch"]
    assert len(epoch_charts) == 3  # accuracy, loss and the train stage's time per epoch
    for name in epoch_charts:
        ticks = x_tick_labels(diff_charts[name])
        assert ticks, f"chart {name}: no x-axis tick labels found"
        assert all(re.fullmatch(r"\d+", tick) for tick in ticks), f"chart {name}: epoch ticks {ticks}"
