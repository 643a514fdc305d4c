"""The `dvc plots` page: offline template, plots declared once with fitting templates, drawn in Chromium.

The DVC tests work in a scratch copy of the repository whose plot CSVs are written by the same
`tspnet.plots` writers the stages call (small made-up numbers, no pipeline run), committed, then
rewritten, so that `dvc plots diff` has two runs to overlay. The browser tests skip when no
Chromium is installed (`apt-get install chromium`); `make check-plots` runs the same check on the
repository's own plots.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.dvc_repo import REPO, commit, copy_repo, dvc
from tspnet import plot_page, plots
from tspnet.browser import BrowserError, check_plots_page, declared_plot_ids, find_chromium
from tspnet.evaluate import Evaluation

DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
TEMPLATES = REPO / ".dvc" / "plots"
ANCHORS = {f"<DVC_METRIC_{name}>" for name in ("DATA", "TITLE", "X", "Y", "X_LABEL", "Y_LABEL")}


def top_level_plots() -> list[tuple[str, dict]]:
    return [next(iter(entry.items())) for entry in DVC_YAML["plots"]]


def plot_file_and_field(definition: dict) -> tuple[str, str]:
    ((path, field),) = definition["y"].items()
    return path, field


# ----------------------------------------------------------------------------- the page template

@pytest.fixture(scope="module")
def template() -> str:
    return plot_page.page_template(*plot_page.library_bundle())


def test_page_template_inlines_the_libraries_and_has_no_cdn_placeholder(template: str):
    assert plot_page.PLOTS_PLACEHOLDER in template
    assert plot_page.CDN_PLACEHOLDER not in template  # where dvc-render would put its CDN <script src> tags
    assert "window.vegaEmbed=" in template and "Vega-Lite 5." in template
    assert plot_page.scan_page(template) == ([], [])


def test_page_template_is_the_same_bytes_every_time(template: str):
    assert plot_page.page_template(*plot_page.library_bundle()) == template


def test_dvc_config_points_at_the_template():
    config = (REPO / ".dvc" / "config").read_text()
    assert "html_template = plots/offline.html" in config
    assert REPO / ".dvc" / "plots" / "offline.html" == REPO / plot_page.TEMPLATE_PATH


def test_scan_finds_remote_resources_and_urls():
    page = ('<html><head><script src="https://cdn.example/vega.js"></script>'
            '<link rel="stylesheet" href="//fonts.example/css"><style>body{background:url("http://x.example/a.png")}'
            '</style></head><body><img src="static/a.png"><img srcset="a.png 1x, https://x.example/b.png 2x">'
            '<script>var spec = {"$schema": "https://vega.github.io/schema/vega-lite/v5.json"};</script></body></html>')
    remote, named = plot_page.scan_page(page)
    assert remote == ["https://cdn.example/vega.js", "//fonts.example/css", "http://x.example/a.png",
                      "https://x.example/b.png"]
    assert named == ["http://x.example/a.png", "https://cdn.example/vega.js",
                     "https://vega.github.io/schema/vega-lite/v5.json", "https://x.example/b.png"]


def test_a_bundle_that_would_break_the_page_is_refused():
    for bad in ("x='</script>'", "{plot_divs}", "{scripts}"):
        with pytest.raises(ValueError, match="cannot be inlined"):
            plot_page.page_template(bad, "versions")


def test_command_line_help_and_clear_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        plot_page.main(["--help"])
    assert exit_info.value.code == 0 and "usage:" in capsys.readouterr().out
    assert plot_page.main(["check", str(tmp_path / "missing.html")]) == 2
    assert "run `dvc plots show`" in capsys.readouterr().err
    (tmp_path / "page.html").write_text("<html></html>")
    monkeypatch.setenv("TSPNET_CHROMIUM", "no-such-browser")
    assert plot_page.main(["check", str(tmp_path / "page.html"), "--dvc-yaml", str(REPO / "dvc.yaml")]) == 2
    assert "no Chromium found" in capsys.readouterr().err


def chart_div(plot_id: str, spec: dict) -> str:
    """A chart div as dvc-render writes it."""
    return f'<div id = "{plot_id}"><script type = "text/javascript">var spec = {json.dumps(spec)}; ' \
           f"vegaEmbed('#{plot_id}', spec);</script></div>"


def test_the_browser_check_tells_drawn_data_from_a_chart_that_only_has_axes(template: str, tmp_path: Path):
    """A chart whose marks exist but draw nothing (log-scale bars stacked from zero) is as blank as no chart."""
    if not find_chromium():
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    values = [{"bin": str(b), "count": str(c)} for b, c in ((0.1, 0), (0.2, 5), (0.3, 40))]
    bars = {"data": {"values": values}, "mark": "bar",
            "encoding": {"x": {"field": "bin", "type": "ordinal"}, "y": {"field": "count", "type": "quantitative"}}}
    blank = json.loads(json.dumps(bars))
    blank["encoding"]["y"]["scale"] = {"type": "log"}
    divs = chart_div("drawn", bars) + chart_div("blank", blank) + chart_div("broken", {"mark": "nonsense"})
    page = tmp_path / "index.html"
    page.write_text(template.replace(plot_page.PLOTS_PLACEHOLDER, divs).replace("{refresh_tag}", ""))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": ["drawn", "blank", "broken", "missing"]}))
    report = check_plots_page(page, tmp_path / "dvc.yaml", timeout=60)
    charts = {chart.id: chart for chart in report.charts}
    assert charts["drawn"].ok and charts["drawn"].marks == 3, report.describe()
    assert charts["blank"].marks == 3 and charts["blank"].data_pixels == 0 and not charts["blank"].ok
    assert charts["broken"].error and not charts["broken"].ok
    assert not charts["missing"].present and not report.ok and not report.requests


# ----------------------------------------------------------------------------- declarations

def test_every_plot_is_declared_once_at_top_level():
    assert not [name for name, stage in DVC_YAML["stages"].items() if "plots" in stage]  # else DVC draws them twice
    sources = [plot_file_and_field(definition) for _, definition in top_level_plots()]
    assert len(sources) == len(set(sources))
    assert len({name for name, _ in top_level_plots()}) == len(sources)
    outs = {next(iter(out)) if isinstance(out, dict) else out
            for stage in DVC_YAML["stages"].values() for out in stage.get("outs", [])}
    for path, _ in sources:
        assert path in outs, f"{path} is no stage output"


@pytest.mark.parametrize("name, definition", top_level_plots(), ids=[n for n, _ in top_level_plots()])
def test_each_plot_has_axes_titles_and_a_template_of_ours(name: str, definition: dict):
    assert {"template", "x", "y", "x_label", "y_label"} <= set(definition)
    # Labels say what an axis is, not a column name (nor DVC's "y" for several columns).
    assert definition["y_label"] not in ("y", plot_file_and_field(definition)[1]) and definition["x_label"] != definition["x"]
    text = (TEMPLATES / f"{definition['template']}.json").read_text()
    assert all(anchor in text for anchor in ANCHORS), name
    assert "http" not in text  # no $schema or other URL in the page outside the libraries
    assert declared_plot_ids(REPO / "dvc.yaml")  # every name maps to a div id


def fields_used(template: dict) -> set[str]:
    """Data fields a template reads besides DVC's anchors and what DVC or the template itself adds."""
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if isinstance(node.get("field"), str):
                found.add(node["field"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(template)
    derived = {t["as"] for t in template.get("transform", []) if "as" in t}
    return {f for f in found if not f.startswith("<DVC_METRIC_")} - derived - {"rev"}


def color_scale(template: dict) -> dict:
    spec = template.get("spec", template)
    return spec["encoding"]["color"]["scale"]


EXAMPLE_TABLES = {
    "plots/map_vs_tiou.csv": lambda: plots.map_table(EVALS[0], EVALS[1]),
    "plots/per_class_ap.csv": lambda: plots.per_class_table(EVALS[0], EVALS[1]),
    "plots/alignment.csv": lambda: plots.alignment_table(*ALIGNMENT),
    "plots/alignment_binned.csv": lambda: plots.binned_alignment_table(*ALIGNMENT),
    "plots/train_losses.csv": lambda: plots.loss_table(HISTORY),
    "plots/center_labels.csv": lambda: plots.center_label_table(np.array([0.1, 0.6]), np.array([0.2, 0.7])),
}


def example_evaluations(offset: float) -> tuple[Evaluation, Evaluation]:
    tiou = np.round(np.arange(1, 8) * 0.1, 1)
    classes = ["Archery", "BoxingPunch", "Diving", "HighJump", "PoleVault"]
    ap = np.clip(80 - 60 * tiou[:, None] + np.arange(5)[None, :] * 3, 0, 100)
    make = lambda values: Evaluation(tiou, classes, values, np.full(5, 10), 100)  # noqa: E731
    return make(ap), make(np.clip(ap + offset, 0, 100))


EVALS = example_evaluations(6.0)
_rng = np.random.default_rng(0)
_best = _rng.uniform(0, 1, 400)
ALIGNMENT = (_best, _rng.uniform(0, 1, 400), np.clip(_best + _rng.normal(0, 0.15, 400), 0, 1))
HISTORY = [{"step": s, "loss": 3.0 / s ** 0.5, "classification_loss": 2.0 / s ** 0.5, "center_loss": 0.3 / s ** 0.3}
           for s in range(10, 210, 10)]


@pytest.mark.parametrize("name, definition", top_level_plots(), ids=[n for n, _ in top_level_plots()])
def test_templates_read_columns_the_stage_writes_and_colour_them_like_the_pngs(name: str, definition: dict):
    path, field = plot_file_and_field(definition)
    table = EXAMPLE_TABLES[path]()
    template = json.loads((TEMPLATES / f"{definition['template']}.json").read_text())
    assert {definition["x"], field} | fields_used(template) <= set(table.columns)
    series = (fields_used(template) & {"method", "points", "loss"}).pop()
    scale = color_scale(template)
    assert set(scale["domain"]) == set(table[series])  # one colour for each series the CSV holds
    colours = {"method": plots.METHOD_COLORS, "points": plots.POINTS_COLORS}.get(series)
    if colours:
        assert dict(zip(scale["domain"], scale["range"])) == colours


# ----------------------------------------------------------------------------- DVC and the browser

def write_example_plots(plots_dir: Path, offset: float) -> None:
    """Every plot CSV (and PNG) through the writers the stages call."""
    base, tspnet = example_evaluations(offset)
    plots.write_map_plots(plots_dir, base, tspnet)
    best, base_score, aligned = ALIGNMENT
    plots.write_alignment_plot(best, base_score, np.clip(aligned + offset / 100, 0, 1), plots_dir)
    plots.write_loss_plot([{**h, "loss": h["loss"] * (1 + offset / 10)} for h in HISTORY], plots_dir)
    plots.write_center_label_plot(ALIGNMENT[1], np.clip(ALIGNMENT[1] + offset / 20, 0, 1), plots_dir)


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy with example plot data committed (HEAD) and different data in the workspace."""
    repo = copy_repo(tmp_path_factory.mktemp("plots") / "repo")
    plot_page.write_page_template(repo / plot_page.TEMPLATE_PATH)
    write_example_plots(repo / "plots", offset=0.0)
    commit(repo, "example plots")
    write_example_plots(repo / "plots", offset=6.0)
    return repo


def show(repo: Path, *args: str) -> tuple[Path, str]:
    out = repo / "dvc_plots" / ("-".join(args) or "show")
    out.parent.mkdir(exist_ok=True)  # DVC makes only the last level of -o
    dvc(["plots", *(args or ("show",)), "-o", str(out)], repo)
    page = out / "index.html"
    return page, page.read_text()


@pytest.mark.pipeline
@pytest.mark.parametrize("command", [(), ("diff", "HEAD")], ids=["show", "diff"])
def test_dvc_writes_an_offline_page_with_each_plot_once(plots_repo: Path, command: tuple[str, ...]):
    page, html = show(plots_repo, *command)
    assert plot_page.scan_page(html) == ([], [])  # no remote resource; no URL outside the libraries
    ids = declared_plot_ids(plots_repo / "dvc.yaml")
    assert html.count("vegaEmbed('#") == len(ids) == 6
    for plot_id in ids:
        assert f'<div id = "{plot_id}">' in html, plot_id
    for name, definition in top_level_plots():
        assert json.dumps(definition["y_label"])[1:-1] in html, name
    if command:
        assert '"rev": "HEAD"' in html and '"rev": "workspace"' in html


@pytest.mark.pipeline
def test_each_filled_spec_draws_marks_without_a_browser(plots_repo: Path):
    """DVC's filled Vega-Lite specs rendered to SVG by the same libraries (vl-convert's own engine)."""
    import vl_convert

    shown = json.loads(dvc(["plots", "diff", "HEAD", "--json"], plots_repo).stdout)
    specs = {plot_id: entries[0]["content"] for plot_id, entries in shown["data"].items()}
    assert sorted(specs) == sorted(name for name, _ in top_level_plots())
    for plot_id, spec in specs.items():
        svg = vl_convert.vegalite_to_svg(spec, vl_version=plot_page.VEGA_LITE_VERSION)
        assert svg.count('class="mark-') > 0 and "role-mark" in svg, plot_id


@pytest.mark.pipeline
@pytest.mark.parametrize("command", [(), ("diff", "HEAD")], ids=["show", "diff"])
def test_page_renders_in_headless_chromium_with_the_network_off(plots_repo: Path, command: tuple[str, ...]):
    if not find_chromium():
        pytest.skip("no Chromium on this machine (apt-get install chromium); `make check-plots` needs it too")
    page, _ = show(plots_repo, *command)
    try:
        report = check_plots_page(page, plots_repo / "dvc.yaml", timeout=120, screenshot=page.with_suffix(".png"))
    except BrowserError as exc:
        pytest.fail(str(exc))
    assert report.ok, report.describe()
    assert len(report.charts) == 6 and not report.requests and not report.errors


@pytest.mark.pipeline
def test_the_check_fails_a_page_that_loads_vega_from_a_cdn(plots_repo: Path):
    """DVC's default page (no html_template) is what users saw: blank offline. The check must say so."""
    if not find_chromium():
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    from dvc_render.html import PAGE_HTML

    default_page = plots_repo / "dvc_default_page.html"
    default_page.write_text(PAGE_HTML)
    out = plots_repo / "dvc_plots" / "cdn"
    out.parent.mkdir(exist_ok=True)
    dvc(["plots", "show", "-o", str(out), "--html-template", str(default_page)], plots_repo)
    html = (out / "index.html").read_text()
    remote, _ = plot_page.scan_page(html)
    assert remote and all(url.startswith("https://cdn.jsdelivr.net/") for url in remote)
    report = check_plots_page(out / "index.html", plots_repo / "dvc.yaml", timeout=60)
    assert not report.ok
    assert set(report.requests) == set(remote)
    assert all(not chart.ok for chart in report.charts)
