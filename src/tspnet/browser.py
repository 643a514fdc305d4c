"""Check a `dvc plots` page in a real browser with the network off: headless Chromium.

What "renders offline" means here, checked in one browser session:
- no request leaves the page: Chromium reports every request it is about to send
  (DevTools `Network.requestWillBeSent`); anything but file:, data:, blob: and about:
  fails the check, whether or not it could have succeeded;
- no script error (`Runtime.exceptionThrown`, console errors, errors logged by Chromium);
- every plot that dvc.yaml declares has its chart div, Vega-Embed finished it without
  error (`window.plotStatus`, kept by the page template, see `tspnet.plot_page`), and
  its data marks show: the page is photographed twice, as it is and with the data marks
  (SVG elements under Vega's `role-mark` groups) hidden, and enough pixels inside the
  chart's box must differ. Axes, titles and legends alone do not pass, nor do marks that
  exist but have no visible geometry (a log scale over a zero, a NaN coordinate).

The network is off in two ways at once: every host name resolves to nothing
(`--host-resolver-rules`) and every connection goes to a closed local port
(`--proxy-server=127.0.0.1:9`); Chromium's own background traffic is switched off
by the flags the machine's documentation prescribes.

Chromium is driven over `--remote-debugging-pipe` (DevTools protocol as NUL-terminated
JSON on file descriptors 3 and 4), which needs nothing beyond the standard library.
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_ENV = "TSPNET_CHROMIUM"  # a browser binary to use instead of the first of CHROMIUM_NAMES on PATH
OFFLINE_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--no-default-browser-check", "--disable-features=MediaRouter,OptimizationHints,Translate",
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
)
LOCAL_SCHEMES = ("file:", "data:", "blob:", "about:")
PAGE_WIDTH = 1400
MIN_DATA_PIXELS = 30  # pixels a chart's data marks must change for it to count as drawn
HIDE_DATA_MARKS = """(() => { const style = document.createElement('style');
  style.textContent = 'g.role-mark > :not(g) { visibility: hidden !important; }';
  document.head.appendChild(style); return true; })()"""


class BrowserError(RuntimeError):
    """Chromium could not be started or stopped answering."""


def find_chromium() -> str | None:
    chosen = os.environ.get(CHROMIUM_ENV)
    if chosen:
        return chosen if shutil.which(chosen) else None
    return next((path for path in map(shutil.which, CHROMIUM_NAMES) if path), None)


class DevTools:
    """One headless Chromium, spoken to over the DevTools pipe."""

    def __init__(self, executable: str, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.events: list[dict] = []
        self._responses: queue.Queue = queue.Queue()
        self._next_id = 0
        self._profile = tempfile.mkdtemp(prefix="tspnet-chromium-")
        # Ours to write / Chromium's fd 3 (commands); Chromium's fd 4 / ours to read (responses).
        command_read, self._command_write = os.pipe()
        self._response_read, response_write = os.pipe()
        # Move Chromium's ends above 4 first, so placing them on 3 and 4 cannot overwrite each other.
        child_in = fcntl.fcntl(command_read, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(response_write, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(command_read)
        os.close(response_write)

        def place_pipes() -> None:  # runs in the child, before exec
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self._stderr = tempfile.TemporaryFile()
        try:
            self.process = subprocess.Popen(
                [executable, *OFFLINE_FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
                 "about:blank"],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
                close_fds=False, preexec_fn=place_pipes)
        except OSError as exc:
            for fd in (self._command_write, self._response_read):
                os.close(fd)
            self._stderr.close()
            shutil.rmtree(self._profile, ignore_errors=True)
            raise BrowserError(f"cannot start {executable}: {exc}") from exc
        finally:
            os.close(child_in)
            os.close(child_out)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._response_read, "rb", buffering=0) as stream:
            while chunk := stream.read(1 << 16):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._responses.put(message)
                    else:
                        self.events.append(message)
        self._responses.put(None)  # Chromium closed the pipe

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._command_write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                response = self._responses.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BrowserError(f"Chromium did not answer {method} within {self.timeout:.0f} s") from None
            if response is None:
                raise BrowserError(f"Chromium exited during {method}: {self.stderr()[-2000:]}")
            if response["id"] == self._next_id:
                if "error" in response:
                    raise BrowserError(f"{method}: {response['error'].get('message')}")
                return response.get("result", {})

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")

    def close(self) -> None:
        try:
            if self.process.poll() is None:
                os.write(self._command_write, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
            os.close(self._command_write)
            self.process.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()
        self._stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> "DevTools":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class Chart:
    id: str
    present: bool = False  # its div is in the page
    done: bool = False  # Vega-Embed finished it
    error: str | None = None
    marks: int = 0  # data-mark elements (SVG)
    box: tuple[float, float, float, float] = (0, 0, 0, 0)  # x, y, width, height in CSS pixels
    data_pixels: int = 0  # pixels in its box that change when its data marks are hidden

    @property
    def ok(self) -> bool:
        return (self.present and self.done and self.error is None and self.marks > 0
                and self.data_pixels >= MIN_DATA_PIXELS)


@dataclass
class PageReport:
    page: Path
    charts: list[Chart]
    requests: list[str] = field(default_factory=list)  # non-local URLs the page asked for
    errors: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.charts) and all(c.ok for c in self.charts) and not self.requests and not self.errors

    def describe(self) -> str:
        lines = [f"{self.page}: {'OK' if self.ok else 'FAILED'}, {len(self.charts)} chart(s) in headless "
                 f"Chromium with the network off, {self.seconds:.1f} s"]
        for chart in self.charts:
            state = "ok" if chart.ok else "NOT DRAWN"
            lines.append(f"  {state:9} {chart.id}: div {'present' if chart.present else 'MISSING'}, "
                         f"{chart.marks} marks drawing {chart.data_pixels} pixels"
                         + (f", error: {chart.error}" if chart.error else ""))
        lines += [f"  request to the network: {url}" for url in self.requests]
        lines += [f"  error: {error}" for error in self.errors]
        if self.screenshot:
            lines.append(f"  screenshot: {self.screenshot}")
        return "\n".join(lines)


def declared_plot_ids(dvc_yaml: Path) -> list[str]:
    """The div ids DVC gives the top-level plots of dvc.yaml (dvc-render's own id rule)."""
    from dvc_render.base import Renderer

    plots = yaml.safe_load(dvc_yaml.read_text()).get("plots") or []
    names = [next(iter(plot)) if isinstance(plot, dict) else plot for plot in plots]
    return [Renderer.remove_special_chars(name) for name in names]


# Runs in the page: each expected chart's div, Vega-Embed's outcome, its data marks and box.
CHART_PROBE = """
(ids => {
  const status = Object.fromEntries((window.plotStatus || []).map(s => [s.id, s]));
  return JSON.stringify({tracked: Array.isArray(window.plotStatus), charts: ids.map(id => {
    const div = document.getElementById(id);
    const s = status[id] || {};
    if (!div) return {id, present: false};
    const r = div.getBoundingClientRect();
    return {id, present: true, done: !!s.done, error: s.error || null,
            marks: div.querySelectorAll('g.role-mark > :not(g)').length,
            box: [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]};
  })});
})(IDS)
"""


def check_plots_page(page: Path, dvc_yaml: Path, timeout: float = 120.0, screenshot: Path | None = None,
                     executable: str | None = None) -> PageReport:
    """Open `page` (a file DVC wrote) in headless Chromium with the network off and check every plot of
    `dvc_yaml` was drawn; raise BrowserError when no Chromium is found or it fails to run."""
    executable = executable or find_chromium()
    if not executable:
        raise BrowserError(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)} on PATH, and ${CHROMIUM_ENV}); "
                           "on Debian: apt-get install chromium")
    ids = declared_plot_ids(dvc_yaml)
    started = time.monotonic()
    with DevTools(executable, timeout=timeout) as chrome:
        target = chrome.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = chrome.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Network", "Runtime", "Log", "Page"):
            chrome.send(f"{domain}.enable", session=session)
        chrome.send("Emulation.setDeviceMetricsOverride",
                    {"width": PAGE_WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        chrome.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)

        probe = CHART_PROBE.replace("IDS", json.dumps(ids))
        deadline, timed_out = time.monotonic() + timeout, None
        while True:
            result = chrome.send("Runtime.evaluate", {"expression": probe, "returnByValue": True}, session=session)
            state = json.loads(result.get("result", {}).get("value") or '{"tracked": false, "charts": []}')
            charts = [Chart(**{**c, "box": tuple(c.get("box", (0, 0, 0, 0)))}) for c in state["charts"]]
            loaded = any(e.get("method") == "Page.loadEventFired" for e in chrome.events)
            # A page without our template keeps no status: nothing more will come once it has loaded.
            finished = not state["tracked"] or all(c.done or not c.present for c in charts)
            if loaded and finished:
                break
            if time.monotonic() > deadline:
                timed_out = f"the page was still loading or drawing after {timeout:.0f} s"
                break
            time.sleep(0.2)

        time.sleep(0.3)  # let the last frame paint
        height = chrome.send("Runtime.evaluate", {"expression": "document.documentElement.scrollHeight",
                                                  "returnByValue": True}, session=session)["result"]["value"]
        clip = {"x": 0, "y": 0, "width": PAGE_WIDTH, "height": max(int(height), 1), "scale": 1}

        def photograph() -> bytes:
            shot = chrome.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                          "clip": clip}, session=session)
            return base64.b64decode(shot["data"])

        image = photograph()
        chrome.send("Runtime.evaluate", {"expression": HIDE_DATA_MARKS, "returnByValue": True}, session=session)
        time.sleep(0.3)
        without_data = photograph()
        requests, errors = _requests_and_errors(chrome.events)
        errors += [timed_out] if timed_out else []

    for chart in charts:
        chart.data_pixels = _changed_pixels(image, without_data, chart.box)
    if screenshot:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(image)
    return PageReport(page, charts, requests, errors, screenshot, time.monotonic() - started)


def _requests_and_errors(events: list[dict]) -> tuple[list[str], list[str]]:
    requests, errors = [], []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Network.requestWillBeSent":
            url = params.get("request", {}).get("url", "")
            if not url.startswith(LOCAL_SCHEMES):
                requests.append(url)
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            errors.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                 for a in params.get("args", [])))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
    return sorted(set(requests)), errors


def _changed_pixels(png: bytes, other_png: bytes, box: tuple[float, float, float, float]) -> int:
    """Pixels inside `box` that differ between two screenshots of the same page."""
    import numpy as np
    from PIL import Image

    x, y, width, height = (int(round(v)) for v in box)
    if width <= 0 or height <= 0:
        return 0
    crops = []
    for data in (png, other_png):
        with Image.open(io.BytesIO(data)) as image:
            crops.append(np.asarray(image.convert("RGB").crop((x, y, x + width, y + height)), dtype=np.int16))
    if crops[0].shape != crops[1].shape:
        return 0
    return int((np.abs(crops[0] - crops[1]).max(axis=-1) > 8).sum())
