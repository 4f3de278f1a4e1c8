"""The HTML report opened in a real browser: headless Chromium loads a page made by
`fixnet report`, and a small script of this test (appended to a copy of the page) checks after
load that every plot is drawn (each <img> decoded with a width, each inline <svg> laid out
with a non-empty box), that their number is the one the page announces, and that the page
fetched nothing (no resource entries, no load errors). Chromium writes the result into the
DOM it dumps. A screenshot of the page is kept as an artefact of the run: in $FIXNET_ARTIFACTS,
else <repo>/.artifacts/.

Skipped, with the reason, when no Chromium or Chrome binary is installed (Debian:
apt-get install chromium)."""
import html
import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import fixnet
from conftest import ROOT, fixture_path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
TIMEOUT = 120

CHECK_SCRIPT = r"""
<script>
(function () {
  var errors = [];
  window.addEventListener("error", function (e) {
    var t = e.target || {};
    errors.push((t.tagName || "window") + " " + (t.src || t.href || e.message || ""));
  }, true);
  window.addEventListener("load", function () {
    var imgs = Array.prototype.slice.call(document.querySelectorAll("img"));
    var svgs = Array.prototype.slice.call(document.querySelectorAll("figure.plot > svg"));
    var count = document.getElementById("plot-count");
    var out = {
      imgs: imgs.length,
      imgs_drawn: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; }).length,
      svgs: svgs.length,
      svgs_drawn: svgs.filter(function (s) {
        var r = s.getBoundingClientRect(), b = s.getBBox();
        return r.width > 10 && r.height > 10 && b.width > 0 && b.height > 0 &&
               s.querySelectorAll("path, rect, use").length > 0;
      }).length,
      announced_png: count ? parseInt(count.getAttribute("data-png"), 10) : -1,
      announced_svg: count ? parseInt(count.getAttribute("data-svg"), 10) : -1,
      resources: performance.getEntriesByType("resource").map(function (r) { return r.name; }),
      errors: errors,
      conclusion: (document.getElementById("conclusion") || {}).textContent || ""
    };
    var pre = document.createElement("pre");
    pre.id = "fixnet-browser-check";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  });
})();
</script>
"""


def _browser():
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _artifacts_dir():
    d = os.environ.get("FIXNET_ARTIFACTS") or os.path.join(ROOT, ".artifacts")
    os.makedirs(d, exist_ok=True)
    return d


def _chromium(browser, args, profile):
    """Run headless Chromium; its stderr is noisy (D-Bus, GPU, fonts) and is only shown when
    it fails."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--no-first-run", "--no-default-browser-check", "--disable-extensions",
           "--disable-background-networking", "--hide-scrollbars",
           f"--user-data-dir={profile}"] + args
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{browser} did not finish in {TIMEOUT} s: {' '.join(cmd)}")


@pytest.fixture(scope="module")
def browser():
    b = _browser()
    if b is None:
        pytest.skip("no Chromium/Chrome binary (looked for " + ", ".join(BROWSERS) + "); "
                    "install one (Debian: apt-get install chromium) to test the HTML report in "
                    "a browser")
    return b


@pytest.fixture(scope="module")
def report_page(tmp_path_factory):
    """A report made by the command, as a user runs it, on the conv fixture with eval data."""
    pytest.importorskip("matplotlib")
    d = tmp_path_factory.mktemp("report")
    page = d / "cnn report.html"           # a space in the path: file:// URLs are quoted
    npz = fixture_path("cnn_digits_k3", ".npz")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fixnet.__file__)))
    r = subprocess.run([sys.executable, "-m", "fixnet.cli", "report",
                        fixture_path("cnn_digits_k3"), "--calib", npz + ":x_calib",
                        "--eval", npz + ":x_test", "--eval-labels", npz + ":y_test",
                        "--samples", "64", "--html", str(page)],
                       capture_output=True, text=True, env=env, timeout=300, cwd=str(d))
    assert r.returncode == 0, r.stdout + r.stderr
    return page


def _browser_check(browser, text, tmp_path):
    """Load ``text`` (a page) with the check script appended; the script's findings."""
    checked = tmp_path / "checked.html"
    checked.write_text(text.replace("</body>", CHECK_SCRIPT + "</body>"), encoding="utf-8")
    r = _chromium(browser, ["--virtual-time-budget=10000", "--dump-dom", checked.as_uri()],
                  tmp_path / "profile")
    m = re.search(r'<pre id="fixnet-browser-check">(.*?)</pre>', r.stdout, re.S)
    assert m, (f"{browser} exit {r.returncode}; no check result in the dumped DOM "
               f"({len(r.stdout)} chars); stderr tail: {r.stderr[-2000:]}")
    return json.loads(html.unescape(m.group(1)))


def test_report_renders_in_chromium_with_every_plot_drawn_and_nothing_fetched(browser, report_page,
                                                                              tmp_path):
    text = report_page.read_text(encoding="utf-8")
    res = _browser_check(browser, text, tmp_path)
    n_png = len(re.findall(r"<img ", text))
    n_svg = len(re.findall(r"<svg", text))
    assert res["announced_png"] == n_png > 0 and res["announced_svg"] == n_svg > 0, res
    assert res["imgs"] == res["imgs_drawn"] == n_png, res
    assert res["svgs"] == res["svgs_drawn"] == n_svg, res
    assert res["resources"] == [] and res["errors"] == [], res
    assert res["conclusion"].startswith("layer '") and "costs the most accuracy" in res["conclusion"]


def test_the_browser_check_sees_a_broken_plot_and_a_fetched_file(browser, report_page, tmp_path):
    """The check above can fail: a PNG whose data is damaged is not drawn, an <svg> emptied
    has no box, and an image read from a file is a resource (and an error when missing)."""
    text = report_page.read_text(encoding="utf-8")
    text = re.sub(r'src="data:image/png;base64,[^"]{40}', 'src="data:image/png;base64,AAAA', text,
                  count=1)
    text = re.sub(r"(<figure class=\"plot\" data-plot=\"svg\"[^>]*><svg[^>]*>).*?</svg>",
                  r"\1</svg>", text, count=1, flags=re.S)
    missing = (tmp_path / "missing.png").as_uri()
    text = text.replace("</body>", f'<img src="{missing}" alt="x"></body>')
    res = _browser_check(browser, text, tmp_path)
    assert res["imgs"] - res["imgs_drawn"] == 2, res
    assert res["svgs"] - res["svgs_drawn"] == 1, res
    assert any("missing.png" in r for r in res["resources"] + res["errors"]), res


def test_report_screenshot_is_kept_and_not_blank(browser, report_page, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    shot = os.path.join(_artifacts_dir(), "report_cnn_digits_k3.png")
    if os.path.exists(shot):
        os.remove(shot)
    r = _chromium(browser, ["--virtual-time-budget=10000", f"--screenshot={shot}",
                            "--window-size=1280,4000", report_page.as_uri()], tmp_path / "profile")
    assert os.path.exists(shot), (f"{browser} exit {r.returncode}, wrote no screenshot; "
                                  f"stderr tail: {r.stderr[-2000:]}")
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1280, 4000)
        rgb = im.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        # a drawn page: many colours (text antialiasing, the plots' blue and red) and not
        # all background
        assert colours is None or len(colours) > 50, len(colours)
        top = rgb.crop((0, 0, 1280, 1000))
        bg = max(top.getcolors(maxcolors=1 << 20) or [(0, None)])[0]
        assert bg < 0.98 * 1280 * 1000
        # the plots' blue (#4878a8) is on the page
        blues = sum(c for c, (r_, g, b) in (colours or []) if abs(r_ - 0x48) < 12 and abs(g - 0x78) < 12 and abs(b - 0xa8) < 12)
        assert blues > 1000, blues
