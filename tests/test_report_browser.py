"""The HTML report in a real browser: headless Chromium driven over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe`` (DevTools messages on file
descriptors 3 and 4), so no driver, port or extra Python package is needed. The test
opens a report of every demo method plus the gradient methods (>= 13) at 1,400 px and
checks that no element is wider than the viewport (no horizontal scrolling), that every
method's map of every image is decoded, on screen and not covered, that each map's
printed scale is visible and equals its max |a|, that exactly the negligible maps are
flagged, and takes a screenshot. Without a Chromium binary it is skipped, unless
``PERTURBX_REQUIRE_BROWSER=1`` (set by ``.ci/run``), where it fails.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from perturbx import Occlusion
from perturbx.compare import compare
from perturbx.datasets import make_shapes

torch = pytest.importorskip("torch")  # the gradient methods make the report >= 13 methods wide
from perturbx.adapters import Torch  # noqa: E402
from perturbx.demo import default_explainers  # noqa: E402

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


VIEWPORT = 1400
SCORE_UNITS = {"Occlusion", "C2F-Occlusion", "RISE", "LIME", "KernelSHAP", "Occlusion (baseline = x)"}

# one pass over the page: open every <details>, then measure every element and every map
MEASURE = """(async () => {
  document.querySelectorAll('details').forEach(d => { d.open = true; });
  const decoded = await Promise.all(Array.from(document.images, i => i.decode().then(() => i.naturalWidth, () => 0)));
  const vw = document.documentElement.clientWidth;
  const wide = [];
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && (r.right > vw + 0.5 || r.left < -0.5)) {
      wide.push(`${el.tagName}.${el.className} ${Math.round(r.left)}..${Math.round(r.right)}`);
    }
  }
  const onTop = (el) => {
    const r = el.getBoundingClientRect();
    const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
    return r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= vw && el.contains(hit);
  };
  const maps = [];
  for (const fig of document.querySelectorAll('figure.map[data-method]')) {
    const img = fig.querySelector('img.tile'), scale = fig.querySelector('.scale');
    const flag = fig.querySelector('.flag:not(.zero)');
    fig.scrollIntoView({block: 'center'});
    const r = img.getBoundingClientRect();
    maps.push({method: fig.dataset.method, image: Number(fig.dataset.image), natural: img.naturalWidth,
               width: r.width, height: r.height, visible: onTop(img), scale: scale.innerText,
               scaleVisible: onTop(scale), flag: flag ? flag.innerText : null,
               flagVisible: flag ? onTop(flag) : false});
  }
  return {decoded, wide, maps, title: document.title, scrollWidth: document.documentElement.scrollWidth, vw,
          summaryRows: document.querySelectorAll('table.summary tr:not(.groups)').length,
          groupRows: document.querySelectorAll('table.summary tr.groups').length};
})()"""


def _small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(128, 4)).eval()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A report of the demo's methods and the gradient ones, plus one map that must be flagged negligible."""
    data = make_shapes(3, size=32, random_state=11)
    explainers = default_explainers(0, (32, 32))
    explainers["Occlusion (baseline = x)"] = Occlusion(window=8, stride=4, baseline=lambda x: x)  # drops all 0
    model = Torch(_small_cnn(), batch_size=256, output="probs")
    comp = compare(model, data.images, explainers, metrics=["deletion", "pointing_game"], ground_truth=data.masks,
                   targets=data.labels, class_names=data.class_names)
    scores = model.predict(data.images)[np.arange(3), data.labels]
    return comp.to_html(tmp_path_factory.mktemp("report") / "report.html", n_images=None), comp, scores


def _measure(path: Path, profile: Path) -> tuple[dict, bytes]:
    browser = DevTools(_chromium(), profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        browser.send("Page.enable", session=session)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": VIEWPORT, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
        browser.send("Page.navigate", {"url": path.resolve().as_uri()}, session=session)
        browser.wait_event("Page.loadEventFired")
        page = browser.send("Runtime.evaluate", {"expression": MEASURE, "awaitPromise": True, "returnByValue": True},
                            session=session)["result"]["value"]
        shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                            session=session)
    finally:
        browser.close()
    return page, base64.b64decode(shot["data"])


def test_every_map_is_visible_with_its_scale_at_1400_px_in_chromium(report, tmp_path):
    path, comp, scores = report
    assert len(comp.methods) >= 14  # the 13 demo and gradient methods, and the negligible occlusion
    page, png = _measure(path, tmp_path / "profile")
    assert page["title"] == "perturbx comparison" and page["summaryRows"] == 1 + len(comp.methods)
    assert page["groupRows"] == 1  # the columns grouped by the property they test
    assert page["vw"] <= VIEWPORT and page["scrollWidth"] <= page["vw"], page["scrollWidth"]  # no sideways scroll
    assert page["wide"] == []  # no element reaches past the viewport, the opened per-image table included
    assert all(w > 0 for w in page["decoded"]) and len(page["decoded"]) == 3 * (1 + len(comp.methods)) + 1
    seen = {(m["method"], m["image"]): m for m in page["maps"]}
    assert set(seen) == {(m, i) for m in comp.methods for i in range(3)}
    for (method, i), m in seen.items():
        assert m["natural"] > 0 and m["width"] >= 100 and m["height"] >= 100 and m["visible"], m
        assert m["scaleVisible"], m
        max_abs = float(np.abs(comp.maps[method][i]).max())
        printed = float(re.search(r"\+(\S+)", m["scale"]).group(1))
        assert printed == pytest.approx(max_abs, rel=0.051, abs=1e-12), (method, i, m["scale"], max_abs)
        negligible = method in SCORE_UNITS and max_abs < 0.01 * abs(scores[i])
        assert (m["flag"] is not None) == negligible and m["flagVisible"] == negligible, (method, i, m)
    assert all(seen[("Occlusion (baseline = x)", i)]["flag"] for i in range(3))
    shot = tmp_path / "report.png"
    shot.write_bytes(png)
    from PIL import Image

    with Image.open(shot) as img:
        pixels = np.asarray(img.convert("L"), dtype=np.float64)
    assert VIEWPORT - 20 <= pixels.shape[1] <= VIEWPORT and pixels.shape[0] > 2000  # the whole page
    assert pixels.std() > 5  # not blank
    if os.environ.get("PERTURBX_SCREENSHOT_DIR"):  # keep it, e.g. as a CI artefact
        shutil.copy(shot, Path(os.environ["PERTURBX_SCREENSHOT_DIR"]) / "report.png")
