"""The whole book as one PDF, built offline: Jupyter Book's single-page HTML, printed by
headless Chromium.

Jupyter Book's own PDF routes need either a LaTeX installation of several hundred megabytes
(`--builder pdflatex`) or a Chromium that pyppeteer downloads (`--builder pdfhtml`). This
route uses what the browser test already installs (Debian's chromium and chromium-driver):
`jupyter-book build --builder singlehtml` renders every page into one HTML file from the
executed notebooks in the cache (`make book` first), a local HTTP server serves it with its
MathJax, and Chromium's print-to-PDF writes `_build/pdf/book.pdf` once every formula has
rendered.

    make pdf        # after make book
"""

from __future__ import annotations

import base64
import functools
import http.server
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..paths import project_root
from ..storage import atomic_write_bytes

MATH_TIMEOUT = 300  # seconds for MathJax to typeset the whole book on one page


class PdfError(RuntimeError):
    """The PDF could not be made: no Chromium, or the single-page build failed."""


def build_singlehtml(root: Path, execute: bool = True) -> Path:
    """`jupyter-book build --builder singlehtml`; the folder of the one-page site."""
    jupyter_book = Path(sys.executable).parent / "jupyter-book"
    command = [str(jupyter_book), "build", str(root), "--builder", "singlehtml", "--keep-going"]
    done = subprocess.run(command, capture_output=True, text=True)
    site = root / "_build" / "singlehtml"
    if done.returncode != 0 or not (site / "index.html").is_file():
        raise PdfError(f"the single-page build failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return site


def single_page(site: Path) -> Path:
    """The one page of a single-page build, where its links resolve. Jupyter Book writes an
    `index.html` that redirects to the root document (`book/intro.html`), whose links are
    relative to the site's top; a copy at the top serves them."""
    index = (site / "index.html").read_text()
    redirect = re.search(r'url=([^"]+)"', index)
    if redirect is None:
        return site / "index.html"
    page = site / "book.html"
    shutil.copy(site / redirect.group(1), page)
    return page


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def print_to_pdf(site: Path, out: Path, driver=None) -> Path:
    """Print the single page of `site` to `out` with headless Chromium (a selenium driver,
    started here unless one is given); the PDF's path."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    own = driver is None
    driver = driver or _chromium()
    try:
        driver.set_page_load_timeout(MATH_TIMEOUT)
        driver.set_script_timeout(MATH_TIMEOUT)
        driver.get(f"http://127.0.0.1:{server.server_port}/{single_page(site).name}")
        deadline = time.monotonic() + MATH_TIMEOUT
        pending = "return document.querySelectorAll('.math:not(:has(mjx-container))').length"
        while driver.execute_script(pending) and time.monotonic() < deadline:
            time.sleep(1)
        # through the DevTools protocol: WebDriver's print waits 10 s at most, too short for a
        # whole book
        printed = driver.execute_cdp_cmd("Page.printToPDF", {"printBackground": True, "preferCSSPageSize": True})
        pdf = base64.b64decode(printed["data"])
    finally:
        if own:
            driver.quit()
        server.shutdown()
    return atomic_write_bytes(out, pdf)


def _chromium():
    from selenium import webdriver

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if not (chromium and chromedriver):
        raise PdfError("the PDF is printed by headless Chromium: install Debian's chromium and chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=chromedriver), options=options)


def page_count(pdf: bytes) -> int:
    """Pages of a PDF, counted from its page objects."""
    return pdf.count(b"/Type /Page") - pdf.count(b"/Type /Pages")


def main() -> int:
    root = project_root()
    out = print_to_pdf(build_singlehtml(root), root / "_build" / "pdf" / "book.pdf")
    print(f"{out}: {page_count(out.read_bytes())} pages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
