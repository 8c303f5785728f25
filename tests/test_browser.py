"""Every page of the built book in a real browser, opened from disk with the network refused.

Each page of `_toc.yml`, the general index and the search page (searching "MNIST") is opened as
a `file://` URL, every request that would leave the disk is refused and counted as a failure,
and the test checks: no console error, no failed request, every image loaded and described
(alt text), every formula typeset by the book's own MathJax, every Mermaid diagram drawn as an
SVG, and every internal link's target page and anchor present.

Needs Chromium (`apt-get install chromium`, or $DLBOOK_CHROMIUM), the Playwright Python package
(`pip install playwright`; its own browser download is not used) and the book's JavaScript
packages (`npm ci`, which installs the versions `package-lock.json` pins into `node_modules`;
the build copies them into `_build/html/_static/vendor`). Without them it skips, saying which.
"""

import html
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = Path(os.environ.get("DLBOOK_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
PINS = json.loads((ROOT / "package.json").read_text(encoding="utf-8"))["dependencies"]
WAIT_MS = 60_000  # for MathJax and mermaid on a busy 2-core machine
STAGES = (
    "Requirements",
    "Technology selection",
    "Framework",
    "Training",
    "Evaluation",
    "Deployment",
)
SYSTEM_PARTS = ("Data", "Training", "Serving")


def _toc_files(entry: Any) -> list[str]:
    """Every `file:` (and the root) in a _toc.yml entry, in reading order."""
    if isinstance(entry, list):
        return [name for item in entry for name in _toc_files(item)]
    if not isinstance(entry, dict):
        return []
    own = [entry[key] for key in ("root", "file") if key in entry]
    return own + [
        name for key in ("parts", "chapters", "sections") for name in _toc_files(entry.get(key))
    ]


TOC = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
PAGES = [f"{name}.html" for name in _toc_files(TOC)] + ["genindex.html", "search.html"]
SOURCES = [
    *(
        src
        for name in _toc_files(TOC)
        for src in ROOT.glob(f"{name}.*")
        if src.suffix in (".ipynb", ".md")
    ),
    *(ROOT / "_ext").glob("*.py"),
    *(ROOT / name for name in ("_config.yml", "_toc.yml", "references.bib", "package-lock.json")),
]


def _stale() -> bool:
    """True when a page is missing or older than a chapter, an extension or the configuration."""
    pages = [HTML / page for page in PAGES]
    if not all(page.is_file() for page in pages):
        return True
    oldest = min(page.stat().st_mtime for page in pages)
    return any(src.stat().st_mtime > oldest for src in SOURCES if src.is_file())


@pytest.fixture(scope="module")
def book() -> Path:
    """The built HTML book, built with the README's command if it is stale."""
    missing = [
        name for name in PINS if not (ROOT / "node_modules" / name / "package.json").is_file()
    ]
    if missing:
        pytest.skip(f"npm packages {missing} not installed: run `npm ci` in {ROOT}")
    if _stale():
        jb = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
        run = subprocess.run(
            [jb, "build", ".", "-n", "-W", "--keep-going"], cwd=ROOT, capture_output=True, text=True
        )
        problems = [
            line
            for line in (run.stdout + run.stderr).splitlines()
            if "WARNING" in line or "ERROR" in line
        ]
        absent = [page for page in PAGES if not (HTML / page).is_file()]
        if absent:  # an incremental build may leave up-to-date pages untouched: only absence fails
            pytest.fail(f"jupyter-book build did not write {absent}:\n" + "\n".join(problems))
        if run.returncode != 0:  # the pages were written (--keep-going); the build step gates these
            warnings.warn(
                "jupyter-book build . -n -W --keep-going reported:\n" + "\n".join(problems[:20]),
                stacklevel=1,
            )
    return HTML


@pytest.fixture(scope="module")
def browser():
    """Playwright's Chromium API driving the system's Chromium, headless."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright is not installed: pip install playwright (the Python package only)",
    )
    if not CHROMIUM.is_file():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: apt-get install chromium, "
            "or set DLBOOK_CHROMIUM to its executable"
        )
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Visit:
    """What one page did in the browser, and what it showed once its scripts had run."""

    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions
    failed: list[str] = field(default_factory=list)  # refused or failed requests
    requested: list[str] = field(default_factory=list)
    shown: dict[str, Any] = field(default_factory=dict)  # from SHOWN, below


# Everything read from the page after MathJax and mermaid finished (or gave up).
SHOWN = """() => {
  const raw = [];
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight';
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const text = node.textContent;
    if (/\\\\\\(|\\\\\\[|\\$\\$|\\\\begin\\{/.test(text) && !node.parentElement.closest(skip))
      raw.push(text.trim().slice(0, 80));
  }
  const maths = [...document.querySelectorAll('.math')];
  return {
    images: [...document.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth,
                                            alt: (i.getAttribute('alt') || '').trim()})),
    math: maths.length,
    untypeset: maths.filter(m => !m.querySelector('mjx-container')).map(
      m => m.textContent.trim().slice(0, 80)),
    math_errors: [...document.querySelectorAll('mjx-merror, [data-mjx-error]')].map(
      e => e.getAttribute('data-mjx-error') || e.textContent),
    raw_tex: raw,
    mathjax: window.MathJax && MathJax.version || null,
    diagrams: [...document.querySelectorAll('pre.mermaid')].map(d => {
      const svg = d.querySelector('svg');
      const links = svg ? [...svg.querySelectorAll('a')] : [];
      return {svg: !!svg, text: svg ? svg.textContent : '',
              links: links.map(a => a.getAttribute('href') || a.getAttribute('xlink:href'))};
    }),
    links: [...document.querySelectorAll('a[href], svg a')].map(a => {
      const href = a.getAttribute('href') || a.getAttribute('xlink:href') || '';
      return {href, url: new URL(href, document.baseURI).href};
    }),
    results: [...document.querySelectorAll('#search-results ul.search li a')].map(a => a.href),
  };
}"""


def _refuse_network(visit: Visit):
    """A route handler: files on disk load; every other request is refused and recorded."""

    def handle(route) -> None:
        url = route.request.url
        if url.startswith(("file:", "data:", "blob:")):  # data:/blob: never leave the page
            route.continue_()
        else:
            visit.failed.append(f"refused (network): {url}")
            route.abort()

    return handle


def _open(browser, page_name: str) -> Visit:
    """Open one built page offline, wait for its math and diagrams, and read what it shows."""
    visit = Visit()
    page = browser.new_page()
    page.on("console", lambda msg: msg.type == "error" and visit.errors.append(msg.text))
    page.on("pageerror", lambda exc: visit.errors.append(f"uncaught: {exc}"))
    page.on("request", lambda req: visit.requested.append(req.url))
    page.on("requestfailed", lambda req: visit.failed.append(f"{req.failure}: {req.url}"))
    page.route("**/*", _refuse_network(visit))
    query = "?q=MNIST" if page_name == "search.html" else ""
    page.goto((HTML / page_name).as_uri() + query, wait_until="load")
    waits = {
        "MathJax": "() => !window.MathJax || !MathJax.startup"
        " || MathJax.startup.promise.then(() => true)",
        "mermaid": "() => [...document.querySelectorAll('pre.mermaid')].every("
        "d => d.getAttribute('data-processed') === 'true' && d.querySelector('svg'))",
        "images": "() => [...document.images].every(i => i.complete)",
    }
    if page_name == "search.html":
        waits["search"] = "() => document.querySelector('#search-results ul.search li')"
    for what, condition in waits.items():
        try:
            page.wait_for_function(condition, timeout=WAIT_MS)
        except Exception as exc:  # recorded: the checks below name the symptom
            visit.errors.append(f"gave up waiting for {what}: {str(exc).splitlines()[0]}")
    visit.shown = page.evaluate(SHOWN)
    page.close()
    return visit


@pytest.fixture(scope="module")
def visit(book, browser):
    """Open a page once (cached), whichever checks ask for it."""
    return cache(lambda page_name: _open(browser, page_name))


@cache
def _ids(target: Path) -> frozenset[str]:
    """Every id (and named anchor) in a built page's HTML."""
    text = target.read_text(encoding="utf-8", errors="replace")
    return frozenset(html.unescape(m) for m in re.findall(r'\b(?:id|name)="([^"]*)"', text))


def _broken(link: dict[str, str]) -> str | None:
    """Why an internal link does not resolve, or None (also for external links)."""
    parts = urlsplit(link["url"])
    if parts.scheme != "file":
        return None  # http(s), mailto, javascript: not part of the book's files
    target = Path(unquote(parts.path))
    if target.is_dir():
        target = target / "index.html"
    if not target.is_file():
        return f"{link['href']}: no file {target}"
    fragment = unquote(parts.fragment)
    if fragment and target.suffix == ".html" and fragment not in _ids(target):
        return f"{link['href']}: no #{fragment} in {target.name}"
    return None


@pytest.mark.parametrize("page_name", PAGES)
def test_no_console_error(visit, page_name):
    assert not visit(page_name).errors, visit(page_name).errors


@pytest.mark.parametrize("page_name", PAGES)
def test_no_failed_or_network_request(visit, page_name):
    assert not visit(page_name).failed, visit(page_name).failed


@pytest.mark.parametrize("page_name", PAGES)
def test_every_image_loads_and_has_alt_text(visit, page_name):
    images = visit(page_name).shown["images"]
    assert not [i["src"] for i in images if i["width"] == 0], "images that did not load"
    assert not [i["src"] for i in images if not i["alt"]], "images without alt text"


@pytest.mark.parametrize("page_name", PAGES)
def test_math_is_typeset_offline(visit, page_name):
    shown = visit(page_name).shown
    if shown["math"]:
        assert shown["mathjax"] == PINS["mathjax"], "the page did not run the book's own MathJax"
    assert not shown["untypeset"], "formulas MathJax did not typeset"
    assert not shown["math_errors"], "TeX errors"
    assert not shown["raw_tex"], "TeX delimiters left in the text"


@pytest.mark.parametrize("page_name", PAGES)
def test_every_diagram_renders_to_svg(visit, page_name):
    diagrams = visit(page_name).shown["diagrams"]
    assert all(d["svg"] for d in diagrams), (
        f"{sum(not d['svg'] for d in diagrams)} diagrams not drawn"
    )
    for diagram in diagrams:
        assert "Syntax error" not in diagram["text"]  # mermaid draws its errors as an SVG too


@pytest.mark.parametrize("page_name", PAGES)
def test_internal_links_and_anchors_resolve(visit, page_name):
    links = visit(page_name).shown["links"]
    assert links, "no links at all: the page did not render"
    assert not [why for link in links if (why := _broken(link))]


def test_search_finds_mnist(visit):
    results = visit("search.html").shown["results"]
    assert results, "search.html?q=MNIST listed nothing"
    assert any(r.split("#")[0].endswith("/mnist_implementation.html") for r in results), results


def test_index_redirects_to_the_first_page(book):
    target = re.search(r'url=([^"\s]+)', (book / "index.html").read_text(encoding="utf-8"))
    assert target and (book / target[1]).is_file(), "index.html does not lead to a built page"


def test_diagrams_use_the_vendored_mermaid(visit):
    requested = visit("chapters/concepts.html").requested
    paths = [urlsplit(url).path for url in requested]  # without Sphinx's ?v=<checksum>
    assert any(path.endswith("/_static/vendor/mermaid/mermaid.min.js") for path in paths)


def test_pipeline_diagram_shows_every_stage(visit):
    pipeline, system = visit("chapters/concepts.html").shown["diagrams"][:2]
    for stage in STAGES:
        assert stage in pipeline["text"], stage
    for part in SYSTEM_PARTS:
        assert part in system["text"], part


def test_pipeline_links_point_to_built_pages_and_anchors(visit):
    links = visit("chapters/concepts.html").shown["diagrams"][0]["links"]
    assert len(links) == len(STAGES)  # one link per stage
    assert {urlsplit(link).path for link in links} == {
        "concepts.html",
        "algorithm_selection.html",
        "mnist_implementation.html",
        "metrics.html",
        "deployment.html",
    }
    page = (HTML / "chapters" / "concepts.html").as_uri()
    for link in links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, f"{link} leaves the book"
        assert _broken({"href": link, "url": urljoin(page, link)}) is None, link
