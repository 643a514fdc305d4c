"""The page `dvc plots show` and `dvc plots diff` write, made to work with no network.

Why DVC's own page is blank offline: dvc-render fills an HTML template whose `{scripts}`
placeholder becomes three `<script src>` tags for Vega, Vega-Lite and Vega-Embed on a CDN;
without the network they never load and every chart div stays empty. DVC lets a repository
replace that template (`plots.html_template` in `.dvc/config`, a path relative to `.dvc/`);
dvc-render then substitutes only `{plot_divs}` (and `{scripts}` / `{refresh_tag}` if the
template has them).

So this module writes `.dvc/plots/offline.html` at set-up (`make venv`): a template with
the three libraries inlined in one `<script>`, taken from the pinned vl-convert-python
package (the Vega project's own bundle, BSD-3-Clause: Vega, Vega-Lite 5 as DVC's
templates need, Vega-Embed), and no `{scripts}` placeholder, so no CDN tag is ever added.
The written page is one self-contained file: it renders from disk, copied anywhere,
with the network off. The template is generated rather than committed because the
libraries come from a package registry at set-up, pinned like every other dependency.

Each chart div that DVC writes calls `vegaEmbed('#id', spec)`. The template wraps that
function to (1) render Vega-Lite with Vega-Embed's menu minus "Open in Vega Editor" (a
remote site), (2) write an error into the chart's div instead of leaving it blank, and
(3) record each chart's outcome in `window.plotStatus`, which `tspnet.browser` reads
when it checks the page in headless Chromium.

The bundle is wrapped in a function so that its top-level names (one-letter `const`s of
minified code) cannot collide with the `var spec` of DVC's chart scripts.
"""

from __future__ import annotations

import argparse
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

from tspnet.files import atomic_path

# `.dvc/config` names this file (plots.html_template = plots/offline.html).
TEMPLATE_PATH = Path(".dvc/plots/offline.html")
# The Vega-Lite major version of DVC's built-in templates and of ours in .dvc/plots/.
VEGA_LITE_VERSION = "5.21"
LIBRARY_MARK = "tspnet: Vega, Vega-Lite and Vega-Embed, inlined"
# Placeholders dvc-render substitutes: `{scripts}` would bring back the CDN tags.
PLOTS_PLACEHOLDER, CDN_PLACEHOLDER = "{plot_divs}", "{scripts}"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
{refresh_tag}
<title>TSPNet plots</title>
<style>
  body { font-family: sans-serif; margin: 16px; color: #222; }
  .charts { display: flex; flex-wrap: wrap; gap: 28px; align-items: flex-start; }
  .plot-error { color: #b00020; white-space: pre-wrap; max-width: 40em; }
</style>
<script>
/* @@MARK@@: @@VERSIONS@@ */
(function () {
@@LIBRARY@@
})();
</script>
<script>
(function () {
  var embed = window.vegaEmbed;
  window.plotStatus = [];
  window.vegaEmbed = function (target, spec, options) {
    var status = {id: String(target).replace(/^#/, ""), done: false, error: null};
    window.plotStatus.push(status);
    var defaults = {mode: "vega-lite", renderer: "svg",
                    actions: {export: true, source: true, compiled: true, editor: false}};
    return embed(target, spec, Object.assign(defaults, options || {})).then(function (result) {
      status.done = true;
      return result;
    }, function (error) {
      status.done = true;
      status.error = String(error);
      var element = document.querySelector(target);
      if (element) {
        var message = document.createElement("p");
        message.className = "plot-error";
        message.textContent = status.id + ": " + status.error;
        element.appendChild(message);
      }
    });
  };
})();
</script>
</head>
<body>
<h1>TSPNet plots</h1>
<div class="charts">
{plot_divs}
</div>
</body>
</html>
"""


def library_bundle() -> tuple[str, str]:
    """(Vega, Vega-Lite and Vega-Embed as one script, their versions) from vl-convert-python."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE_VERSION)
    versions = (f"Vega {vl_convert.get_vega_version()}, Vega-Lite {VEGA_LITE_VERSION}, "
                f"Vega-Embed {vl_convert.get_vega_embed_version()}, from vl-convert-python (BSD-3-Clause)")
    return bundle, versions


def page_template(bundle: str, versions: str) -> str:
    """The HTML template for dvc-render, with `bundle` inlined."""
    for text in ("</script", "<!--", PLOTS_PLACEHOLDER, CDN_PLACEHOLDER, "{refresh_tag}"):
        # Each would end the inline script early, or be substituted by dvc-render.
        if text in bundle or text in versions:
            raise ValueError(f"the Vega bundle contains {text!r}: it cannot be inlined as it is")
    if "*/" in versions:
        raise ValueError(f"unexpected version string {versions!r}")
    return (PAGE.replace("@@MARK@@", LIBRARY_MARK).replace("@@VERSIONS@@", versions)
            .replace("@@LIBRARY@@", bundle))


def write_page_template(path: str | Path = TEMPLATE_PATH) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(page_template(*library_bundle()), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- static check

LOCAL_SCHEMES = {"", "file", "data", "blob", "about", "javascript"}
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "poster", "data", "background", "manifest"}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)""", re.IGNORECASE)
ANY_URL = re.compile(r"""\b(?:https?|ftp|wss?)://[^\s"'`<>)\\]+""", re.IGNORECASE)


class _PageScan(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.references: list[str] = []  # every URL the markup or its CSS would load
        self.outside_library: list[str] = []  # text of the page outside the inlined libraries
        self._in_style = self._in_library = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value is None:
                continue
            if name in URL_ATTRIBUTES:
                self.references += [part.split()[0] for part in value.split(",") if part.strip()] \
                    if name == "srcset" else [value.strip()]
            elif name == "style":
                self.references += [a or b for a, b in CSS_URL.findall(value)]
            elif tag == "meta" and name == "content" and "url=" in value.lower():
                self.references.append(value.lower().split("url=", 1)[1].strip())
            self.outside_library.append(value)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False
        if tag == "script":
            self._in_library = False

    def handle_comment(self, data: str) -> None:
        self.outside_library.append(data)

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.references += [a or b for a, b in CSS_URL.findall(data)]
        if LIBRARY_MARK in data[:400]:
            self._in_library = True
        if not self._in_library:
            self.outside_library.append(data)


def scan_page(html: str) -> tuple[list[str], list[str]]:
    """(remote resources the page's markup and CSS would load, URLs written outside the inlined libraries).

    Both are empty for a page that needs no network. The libraries' own code names a few URLs that
    are never fetched (SVG/XML namespaces, a schema id, a GitHub issue in an error message); the
    browser check (`tspnet.browser`) is what proves nothing is requested.
    """
    scan = _PageScan()
    scan.feed(html)
    scan.close()
    remote = [url for url in scan.references if _is_remote(url)]
    named = sorted({url for text in scan.outside_library for url in ANY_URL.findall(text)})
    return remote, named


def _is_remote(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.netloc) or parts.scheme.lower() not in LOCAL_SCHEMES  # "//host/x" is remote too


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tspnet.plot_page",
        description="Write the offline HTML template for `dvc plots show` / `dvc plots diff` (Vega, Vega-Lite "
        "and Vega-Embed inlined from the pinned vl-convert-python), or check a written page.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    build = commands.add_parser("build", help="write the HTML template (`make venv` does this)")
    build.add_argument("out", nargs="?", default=str(TEMPLATE_PATH), help="default: %(default)s")
    check = commands.add_parser(
        "check", help="check a page DVC wrote: no remote resource, and in headless Chromium with the network "
        "off, every plot of dvc.yaml drawn, no request, no error")
    check.add_argument("page", nargs="?", default="dvc_plots/index.html", help="default: %(default)s")
    check.add_argument("--dvc-yaml", default="dvc.yaml", help="the plots to expect (default: %(default)s)")
    check.add_argument("--screenshot", help="also save a screenshot of the whole page here (PNG)")
    check.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the charts (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.command == "build":
        try:
            print(f"wrote {write_page_template(args.out)}")
        except ImportError:
            return _error("vl-convert-python is not installed: run `make venv` (it is pinned in requirements.txt)")
        return 0
    from tspnet.browser import BrowserError, check_plots_page

    page = Path(args.page)
    if not page.is_file():
        return _error(f"{page} does not exist: run `dvc plots show` (or `dvc plots diff`) first")
    try:
        report = check_plots_page(page, Path(args.dvc_yaml), args.timeout,
                                  Path(args.screenshot) if args.screenshot else None)
    except BrowserError as exc:
        return _error(str(exc))
    print(report.describe())
    return 0 if report.ok else 1


def _error(message: str) -> int:
    print(f"tspnet.plot_page: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
