"""The rendered book as a reader sees it, in headless Chromium.

The book is built from the chapters executed with their CI parameters (the same runs the
notebook tests make), so the test needs no second execution: the executed notebooks and
their ledger records go into a copy of the book whose configuration turns execution off.
The copy is served on localhost and every page of the table of contents is opened in
Chromium, which must show no executed-cell error, load every image, and render every
formula with the book's own MathJax (no network). The search page and the claims ledger are
exercised, every notebook page offers its executed `.ipynb`, and a screenshot of each page
is saved under `_build/screenshots/`.

Chromium and chromedriver come from Debian (`make test` installs them where it can); where
they are missing the test is skipped with that reason.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest
import yaml

from cgclib.book.chapters import _toc_files, list_chapters
from cgclib.ledger import current_records

from ..conftest import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
SCREENSHOTS = ROOT / "_build" / "screenshots"
TIMEOUT = 60  # seconds for a page's scripts (MathJax, search) to finish


@pytest.fixture(scope="session")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip(
            "headless Chromium is not installed (Debian packages chromium and chromium-driver; "
            "`make test` installs them when run as root with apt-get)"
        )
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(TIMEOUT)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def ci_book(browser, ci_chapter_runs, tmp_path_factory) -> Path:
    """`_build/html` of the book built from the CI runs of every chapter."""
    site = tmp_path_factory.mktemp("site")
    shutil.copy(ROOT / "_toc.yml", site)
    shutil.copytree(ROOT / "book", site / "book")
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (site / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    (site / "notebooks").mkdir()
    results = site / "_build" / "results"
    results.mkdir(parents=True)
    for chapter in list_chapters(ROOT):
        run = ci_chapter_runs(chapter)
        shutil.copy(run.notebook, site / "notebooks" / f"{chapter}.ipynb")
        shutil.copy(run.results, results / f"{chapter}.json")
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    built = subprocess.run(
        [str(jupyter_book), "build", str(site), "-W", "-n", "--keep-going"], capture_output=True, text=True
    )
    assert built.returncode == 0, f"the book did not build:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    return site / "_build" / "html"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site_url(ci_book):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(ci_book)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def _pages() -> list[str]:
    return _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))


def _wait(driver, script: str, what: str):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, TIMEOUT).until(lambda d: d.execute_script(script))
    except TimeoutException:
        pytest.fail(f"{driver.current_url}: {what} within {TIMEOUT} s")


PAGE_STATE = """
const unrendered = Array.from(document.querySelectorAll('.math')).filter(m => !m.querySelector('mjx-container'));
const images = Array.from(document.images);
return {
  errors: Array.from(document.querySelectorAll('.output.traceback, .output.error, .cell_output .stderr'))
            .map(e => e.innerText.slice(0, 200)),
  traceback: document.body.innerText.includes('Traceback (most recent call last)'),
  broken_images: images.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src')),
  images: images.length,
  formulas: document.querySelectorAll('.math').length,
  unrendered: unrendered.map(m => m.textContent.slice(0, 80)),
  title: document.title,
  figures: Array.from(document.querySelectorAll('figure[id^="fig-"]')).filter(f => f.querySelector('img')).map(f => ({
    alt: f.querySelector('img').getAttribute('alt') || '',
    number: ((f.querySelector('.caption-number') || {}).textContent || '').trim(),
    caption: ((f.querySelector('figcaption') || {}).innerText || '').length,
  })),
  repeated_ids: Object.entries(Array.from(document.querySelectorAll('[id]')).reduce(
    (seen, e) => (seen[e.id] = (seen[e.id] || 0) + 1, seen), {})).filter(([, n]) => n > 1).map(([id]) => id),
};
"""


@pytest.mark.parametrize("page", _pages())
def test_page_renders_without_errors(browser, site_url, page):
    browser.get(f"{site_url}/{page}.html")
    _wait(browser, "return document.readyState === 'complete'", "the page did not load")
    _wait(
        browser,
        "return Array.from(document.querySelectorAll('.math')).every(m => m.querySelector('mjx-container'))",
        "MathJax did not render every formula",
    )
    state = browser.execute_script(PAGE_STATE)
    assert "404" not in state["title"], f"{page}: page not found"
    assert not state["errors"] and not state["traceback"], f"{page}: executed-cell errors {state['errors']}"
    assert not state["broken_images"], f"{page}: images that do not load: {state['broken_images']}"
    assert not state["unrendered"], f"{page}: formulas left unrendered: {state['unrendered']}"
    assert not state["repeated_ids"], f"{page}: ids used more than once: {state['repeated_ids']}"
    glued = (ROOT / f"{page}.md").read_text().count("{notebook-figure}")
    assert len(state["figures"]) >= glued, (
        f"{page}: {glued} figures pasted in the source, {len(state['figures'])} shown"
    )
    for figure in state["figures"]:
        assert figure["number"].startswith("Figure "), f"{page}: a pasted figure without its number: {figure}"
        assert len(figure["alt"]) > 40 and ".png" not in figure["alt"], f"{page}: alt text that says nothing: {figure}"
        assert figure["caption"] > 40, f"{page}: a pasted figure without a caption: {figure}"
    if page.startswith("notebooks/"):
        assert state["images"] > 0, f"{page}: a chapter notebook without a single figure"
        href = browser.execute_script("const a = document.querySelector('.cgc-download a'); return a && a.href")
        assert href, f"{page}: no link to download the executed notebook"
        with urllib.request.urlopen(href) as response:
            notebook = json.load(response)
        assert any(cell.get("outputs") for cell in notebook["cells"] if cell["cell_type"] == "code"), (
            f"{page}: the downloadable notebook has no outputs"
        )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"{page.replace('/', '-')}.png"))


def test_search_finds_a_chapter(browser, site_url):
    browser.get(f"{site_url}/search.html?q=absorption")
    count = _wait(
        browser,
        "const r = document.querySelectorAll('#search-results li'); return r.length > 0 && r.length",
        "search returned no results for 'absorption'",
    )
    links = browser.execute_script(
        "return Array.from(document.querySelectorAll('#search-results li a')).map(a => a.getAttribute('href'))"
    )
    assert count > 0 and any("absorption" in link for link in links), links


def test_ledger_table_lists_every_claim_and_links_to_its_section(browser, site_url, ci_book, ci_chapter_runs):
    # every current record: a seed-0 record pooled into a family record is shown inside it
    expected = sum(
        len(current_records(json.loads(ci_chapter_runs(c).results.read_text()))) for c in list_chapters(ROOT)
    )
    browser.get(f"{site_url}/book/ledger.html")
    _wait(browser, "return document.readyState === 'complete'", "the ledger page did not load")
    rows = browser.execute_script("""
        return Array.from(document.querySelectorAll('table.claims-ledger tbody tr')).map(r => ({
          verdict: r.querySelector('[class*="verdict-"]') ? r.querySelector('[class*="verdict-"]').innerText : '',
          cells: r.querySelectorAll('[class*="verdict-"]').length,
          href: r.querySelector('a') ? r.querySelector('a').getAttribute('href') : ''}));
    """)
    assert len(rows) == expected
    assert {r["verdict"] for r in rows} <= {"holds", "fails", "inconclusive", "descriptive"}
    assert {r["cells"] for r in rows} == {2}, "each row shows the raw verdict and the one after Holm's correction"
    for row in rows:
        assert "#" in row["href"], f"a ledger row without a link to its section: {row}"
    target = rows[-1]["href"]
    browser.get(f"{site_url}/book/{target}")
    anchor = target.split("#", 1)[1]
    assert browser.execute_script(f"return document.getElementById('{anchor}') !== null"), target


LEDGER_VIEW = """
const rows = Array.from(document.querySelectorAll('table.claims-ledger tbody tr')).filter(r => !r.hidden);
const first = rows[0].cells[0].getBoundingClientRect();
return {
  left: first.left, right: first.right, width: window.innerWidth,
  verdict_first: rows[0].cells[0].querySelector('[class*="verdict-"]') !== null,
  options: Array.from(document.querySelectorAll('.ledger-controls select[name=verdict] option'))
             .map(o => o.value).filter(v => v),
};
"""

LEDGER_FILTER = """
const select = document.querySelector('.ledger-controls select[name=verdict]');
select.value = arguments[0];
select.dispatchEvent(new Event('change', {bubbles: true}));
const visible = Array.from(document.querySelectorAll('table.claims-ledger tbody tr')).filter(r => !r.hidden);
return {
  visible: visible.length,
  matching: visible.filter(r => r.classList.contains('ledger-verdict-' + arguments[0])).length,
  count: document.querySelector('.ledger-count').value,
};
"""

LEDGER_SORT = """
document.querySelectorAll('table.claims-ledger thead button.ledger-sort')[2].click();
return Array.from(document.querySelectorAll('table.claims-ledger tbody tr'))
  .map(r => r.cells[2].querySelector('code, .literal').textContent);
"""


@pytest.mark.parametrize("width", [1280, 420])
def test_ledger_shows_verdicts_first_and_filters_and_sorts(browser, site_url, width):
    """At a desktop and at a phone width the verdict is the first thing in view; filtering
    by verdict shows exactly the rows with it, and the claim column sorts."""
    browser.set_window_size(width, 1000)
    try:
        browser.get(f"{site_url}/book/ledger.html")
        _wait(
            browser, "return document.querySelector('.ledger-controls') !== null", "the ledger controls did not appear"
        )
        view = browser.execute_script(LEDGER_VIEW)
        assert view["verdict_first"], "the first column of the ledger is not the verdict"
        assert view["left"] >= 0 and view["right"] <= view["width"], f"the verdict is out of view at {width} px: {view}"
        for verdict in view["options"]:
            shown = browser.execute_script(LEDGER_FILTER, verdict)
            assert shown["visible"] == shown["matching"] > 0, (verdict, shown)
            assert shown["count"].startswith(f"{shown['visible']} of "), shown
        browser.execute_script(LEDGER_FILTER, "")
        ids = browser.execute_script(LEDGER_SORT)
        assert ids == sorted(ids, key=str.lower) and len(ids) > 1
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(SCREENSHOTS / f"ledger-{width}px.png"))
    finally:
        browser.set_window_size(1280, 1400)


VERDICT_CONTRAST = """
document.documentElement.dataset.theme = arguments[0];
const channel = c => { c /= 255; return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4); };
const luminance = rgb => { const [r, g, b] = rgb.match(/[\\d.]+/g).map(Number);
                           return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b); };
const background = el => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
                            if (c && !c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') return c; }
                           return 'rgb(255, 255, 255)'; };
const out = {};
for (const v of ['holds', 'fails', 'inconclusive']) {
  const el = document.querySelector('table.claims-ledger .verdict-' + v);
  if (!el) continue;
  const [a, b] = [luminance(getComputedStyle(el).color), luminance(background(el))];
  out[v] = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
return out;
"""


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_verdict_colours_are_legible_in_both_themes(browser, site_url, theme):
    browser.get(f"{site_url}/book/ledger.html")
    _wait(browser, "return document.readyState === 'complete'", "the ledger page did not load")
    contrast = browser.execute_script(VERDICT_CONTRAST, theme)
    assert contrast, "no verdict on the ledger page"
    assert all(ratio >= 4.5 for ratio in contrast.values()), f"{theme} theme: contrast {contrast}"


def test_the_whole_book_prints_to_one_pdf_with_its_formulas_typeset(browser, ci_book):
    """`make pdf`'s route on the CI book: the single-page build, every formula typeset by
    MathJax, printed by Chromium into one PDF with at least a page per chapter page."""
    from cgclib.book.pdf import build_singlehtml, page_count, print_to_pdf

    site = build_singlehtml(ci_book.parent.parent)
    out = print_to_pdf(site, site.parent / "pdf" / "book.pdf", driver=browser)
    pdf = out.read_bytes()
    assert pdf.startswith(b"%PDF-")
    assert page_count(pdf) >= len(_pages())
    unrendered = browser.execute_script("return document.querySelectorAll('.math:not(:has(mjx-container))').length")
    typeset = browser.execute_script("return document.querySelectorAll('mjx-container').length")
    assert unrendered == 0 and typeset > 100
