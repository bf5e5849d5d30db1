"""The documentation site: `mkdocs build --strict` (a broken link or reference fails it), generated
pages that follow the code, nothing loaded from outside the site, and a real browser on loopback
(math typeset by MathJax, search answering, no console errors, screenshots)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("mkdocs", "material", "mkdocstrings_handlers", "mathjax")),
    reason="the docs extra is not installed: pip install -e '.[docs]'",
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def test_algorithm_pages_show_every_registered_algorithm_with_its_code_defaults(site):
    from metaconstraint.algorithms import ALGORITHMS

    for name, cls in ALGORITHMS.items():
        page = (site / "algorithms" / name / "index.html").read_text()
        for key, field in cls.Config.model_fields.items():
            row = re.search(rf"<tr>\s*<td><code>{re.escape(key)}</code></td>\s*<td>(.*?)</td>", page, re.S)
            assert row, f"{name}: no row for {key}"
            default = field.get_default(call_default_factory=True)
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                assert f"<code>{default!r}</code>" == row[1].strip(), (name, key, row[1])
        assert 'class="arithmatex"' in page, f"{name}: its docstring's equations are missing"
    aspc = (site / "algorithms" / "aspc" / "index.html").read_text()
    assert "scale_lr_decay_steps" in aspc and "<code>0.002</code>" in aspc


def test_cli_reference_lists_every_command_and_option(site):
    cli = (site / "cli" / "index.html").read_text()
    for command in ("metaconstraint run", "metaconstraint compare", "metaconstraint report", "metaconstraint datasets collect"):
        assert command in cli
    assert "--logger" in cli and "--outer-loss" in cli and "--bootstrap-samples" in cli
    assert "OUT/&lt;algorithm&gt;/&lt;dataset&gt;/seed&lt;K&gt;" in cli  # help text with angle brackets survives


def test_the_site_loads_nothing_from_outside_itself(site):
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    external = re.compile(r"""<(?:script|link|img)[^>]+(?:src|href)=["'](?:https?:)?//""")
    offenders = [str(p.relative_to(site)) for p in pages if external.search(p.read_text())]
    assert not offenders, offenders
    assert (site / "assets" / "mathjax" / "tex-chtml.js").stat().st_size > 500_000
    assert list((site / "assets" / "mathjax" / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


# ----------------------------------------------------------------------------- the browser
@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(QuietHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


PAGES = {"home": "/", "algorithm-aspc": "/algorithms/aspc/", "api-engine": "/api/engine/"}


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (Debian: apt-get install chromium)")
def test_pages_render_math_search_works_and_the_console_stays_clean(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the docs extra)")
    screens = Path(os.environ.get("METACONSTRAINT_SCREENSHOTS") or tmp_path)
    screens.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as playwright:
        # Debian's chromium: Playwright's own browser download is neither needed nor possible here
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url}"))
            page.on("request", lambda r: requests.append(r.url))
            for name, path in PAGES.items():
                page.goto(server + path, wait_until="networkidle")
                page.wait_for_function("window.MathJax && MathJax.startup && MathJax.startup.promise")
                page.evaluate("MathJax.startup.promise")
                formulas = page.locator(".arithmatex").count()
                typeset = page.locator(".arithmatex mjx-container").count()
                assert formulas > 0 and typeset == formulas, f"{name}: {typeset} of {formulas} formulas typeset"
                assert page.locator("mjx-merror").count() == 0, f"{name}: a TeX error"
                page.screenshot(path=str(screens / f"{name}.png"), full_page=False)
            # search: type a query into Material's search box, results appear
            page.goto(server + "/", wait_until="networkidle")
            search = page.locator("input.md-search__input")
            search.click()
            search.press_sequentially("meta-gradient", delay=30)  # key by key, as a person types
            page.wait_for_selector(".md-search-result__item", timeout=15_000)
            assert page.locator(".md-search-result__item").count() > 0
            page.screenshot(path=str(screens / "search.png"))
            assert not problems, problems
            outside = [url for url in requests if not url.startswith(server) and not url.startswith("data:")]
            assert not outside, outside
        finally:
            browser.close()
