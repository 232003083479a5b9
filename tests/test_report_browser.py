"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe`` (DevTools messages on file
descriptors 3 and 4), so no driver, port or extra Python package is needed. The test
checks that the page loads, that every embedded figure decodes (``naturalWidth > 0``)
and takes a screenshot. Without a Chromium binary it is skipped, unless
``PERTURBX_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where it fails.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from perturbx import RISE, Occlusion
from perturbx.adapters import Callable
from perturbx.compare import compare
from perturbx.datasets import make_shapes

from .conftest import linear_model

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("PERTURBX_REQUIRE_BROWSER") == "1":
        pytest.fail("PERTURBX_REQUIRE_BROWSER=1 but no chromium binary is on PATH (apt-get install chromium)")
    pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium chromium-driver)")


class DevTools:
    """A minimal client of the Chrome DevTools protocol over ``--remote-debugging-pipe``."""

    def __init__(self, binary: str, profile: Path, timeout: float = 60.0) -> None:
        to_chrome, self._write = os.pipe()
        self._read, from_chrome = os.pipe()
        # fds >= 10 so that placing them on 3 and 4 in the child cannot clobber one another
        child_in, child_out = fcntl.fcntl(to_chrome, fcntl.F_DUPFD, 10), fcntl.fcntl(from_chrome, fcntl.F_DUPFD, 10)

        def place_fds() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     preexec_fn=place_fds, close_fds=False,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (to_chrome, from_chrome, child_in, child_out):
            os.close(fd)
        self.timeout, self._buffer, self._next_id = timeout, b"", 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        while True:
            for k, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(k)
            self.events.append(self._receive())

    def _receive(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError(f"Chromium sent nothing for {self.timeout} s")
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium closed the DevTools pipe (exit status {self.proc.poll()})")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError, TimeoutError):
            self.send("Browser.close")
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._write)
        os.close(self._read)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    data = make_shapes(3, random_state=11)
    weights = np.random.default_rng(0).normal(size=(4, 3, 64, 64))
    model = Callable(linear_model(weights), batch_size=64)
    comp = compare(model, data.images, {"Occlusion": Occlusion(window=12, stride=6), "RISE": RISE(200, random_state=0)},
                   ground_truth=data.masks, class_names=data.class_names)
    return comp.to_html(tmp_path_factory.mktemp("report") / "report.html")


def test_report_loads_and_every_figure_decodes_in_chromium(report, tmp_path):
    browser = DevTools(_chromium(), tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": report.resolve().as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")
        check = ("Promise.all(Array.from(document.images, i => i.decode().then(() => i.naturalWidth, () => 0)))"
                 ".then(w => ({widths: w, title: document.title, tables: document.querySelectorAll('table').length,"
                 " rows: document.querySelectorAll('table')[0].rows.length}))")
        page = browser.send("Runtime.evaluate", {"expression": check, "awaitPromise": True, "returnByValue": True},
                            session=session)["result"]["value"]
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                            session=session)
    finally:
        browser.close()
    assert page["title"] == "perturbx comparison"
    assert len(page["widths"]) >= 2 and all(w > 0 for w in page["widths"])  # maps grid and curves
    assert page["tables"] >= 3 and page["rows"] == 1 + 2  # header + one row per method
    png = tmp_path / "report.png"
    png.write_bytes(base64.b64decode(shot["data"]))
    from PIL import Image

    with Image.open(png) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
    assert pixels.shape[1] >= 1200 and pixels.shape[0] > 900 and pixels.std() > 5  # a full page, not blank
    if os.environ.get("PERTURBX_SCREENSHOT_DIR"):  # keep it, e.g. as a CI artefact
        shutil.copy(png, Path(os.environ["PERTURBX_SCREENSHOT_DIR"]) / "report.png")
