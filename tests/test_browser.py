"""The built book in a real browser: the concepts chapter's Mermaid diagrams render, links resolve.

Needs Chromium (`apt-get install chromium`, or $DLBOOK_CHROMIUM), the Playwright Python package
(`pip install playwright`; its own browser download is not used) and mermaid's JavaScript from
npm (`npm install --no-save --prefix _build/npm mermaid@<version the page asks for>`, or
$DLBOOK_MERMAID_DIST pointing at a `mermaid/dist` folder). The page asks a CDN for mermaid; the
test answers that request from the local copy, and refuses every other network request.
"""

import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
PAGE = HTML / "chapters" / "concepts.html"
SOURCES = [ROOT / "chapters" / "concepts.ipynb", ROOT / "_config.yml", ROOT / "_toc.yml"]
CHROMIUM = Path(os.environ.get("DLBOOK_CHROMIUM", "/usr/bin/chromium"))
MERMAID_DIST = Path(
    os.environ.get(
        "DLBOOK_MERMAID_DIST", ROOT / "_build" / "npm" / "node_modules" / "mermaid" / "dist"
    )
)
CDN = re.compile(r"^https://cdn\.jsdelivr\.net/npm/mermaid@([^/]+)/dist/(.+)$")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
STAGES = (
    "Requirements",
    "Technology selection",
    "Framework",
    "Training",
    "Evaluation",
    "Deployment",
)
SYSTEM_PARTS = ("Data", "Training", "Serving")


def _stale(page: Path) -> bool:
    """True when the page is missing or older than the chapter or the book's configuration."""
    return not page.is_file() or any(src.stat().st_mtime > page.stat().st_mtime for src in SOURCES)


@pytest.fixture(scope="module")
def built_page() -> Path:
    """The concepts chapter's HTML, built once with the README's command if it is stale."""
    if _stale(PAGE):
        jb = shutil.which("jupyter-book") or str(Path(sys.executable).parent / "jupyter-book")
        run = subprocess.run(
            [jb, "build", ".", "-n", "-W", "--keep-going"], cwd=ROOT, capture_output=True, text=True
        )
        problems = [
            line
            for line in (run.stdout + run.stderr).splitlines()
            if "WARNING" in line or "ERROR" in line
        ]
        if not PAGE.is_file():  # an incremental build may leave an up-to-date page untouched
            pytest.fail("jupyter-book build did not write the chapter:\n" + "\n".join(problems))
        if run.returncode != 0:  # the page was written (--keep-going); the build step gates these
            warnings.warn(
                "jupyter-book build . -n -W --keep-going reported:\n" + "\n".join(problems[:20]),
                stacklevel=1,
            )
    return PAGE


@pytest.fixture(scope="module")
def browser():
    """Playwright's Chromium API driving the system's Chromium, headless and offline."""
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="Playwright is not installed: pip install playwright (the Python package only)",
    )
    if not CHROMIUM.is_file():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: apt-get install chromium, "
            "or set DLBOOK_CHROMIUM to its executable"
        )
    if not (MERMAID_DIST / "mermaid.esm.min.mjs").is_file():
        pytest.skip(
            f"mermaid's JavaScript not found in {MERMAID_DIST}: npm install --no-save "
            "--prefix _build/npm mermaid@11.12.1, or set DLBOOK_MERMAID_DIST"
        )
    with sync_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _serve_offline(route) -> None:
    """Answer mermaid's CDN requests from the local copy; refuse anything else off this disk."""
    url = route.request.url
    match = CDN.match(url)
    if match:
        local = (MERMAID_DIST / match.group(2)).resolve()
        if local.is_file() and MERMAID_DIST.resolve() in local.parents:
            route.fulfill(
                path=str(local),
                content_type="text/javascript",
                headers={"Access-Control-Allow-Origin": "*"},
            )
        else:
            route.fulfill(status=404, body=f"not in the local mermaid copy: {url}")
    elif url.startswith(("file:", "data:", "blob:")):
        route.continue_()
    else:
        route.abort()  # fonts, MathJax, analytics: not needed to render the diagrams


@pytest.fixture(scope="module")
def rendered(built_page, browser):
    """The page after mermaid ran: (svg texts, svg link targets, requested mermaid versions)."""
    page = browser.new_page()
    errors, versions = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on("request", lambda req: CDN.match(req.url) and versions.append(CDN.match(req.url)[1]))
    page.route("**/*", _serve_offline)
    page.goto(built_page.as_uri(), wait_until="load")
    page.wait_for_function(
        "() => { const d = [...document.querySelectorAll('pre.mermaid')];"
        " return d.length > 0 && d.every(e => e.getAttribute('data-processed') === 'true'"
        " && e.querySelector('svg')); }",
        timeout=60_000,
    )
    diagrams = page.eval_on_selector_all(
        "pre.mermaid svg",
        "svgs => svgs.map(s => ({text: s.textContent, links: [...s.querySelectorAll('a')].map("
        "a => a.getAttribute('href') || a.getAttribute('xlink:href'))}))",
    )
    page.close()
    mermaid_errors = [e for e in errors if "mermaid" in e.lower() or "syntax" in e.lower()]
    return diagrams, versions, mermaid_errors


def test_every_diagram_renders_to_svg(rendered):
    diagrams, versions, errors = rendered
    assert versions, "the page never asked for mermaid's JavaScript"
    assert not errors, errors
    assert len(diagrams) == 2
    for diagram in diagrams:
        assert "Syntax error" not in diagram["text"]  # mermaid draws its errors as an SVG too


def test_pipeline_diagram_shows_every_stage(rendered):
    pipeline, system = rendered[0]
    for stage in STAGES:
        assert stage in pipeline["text"], stage
    for part in SYSTEM_PARTS:
        assert part in system["text"], part


def test_pipeline_links_point_to_built_pages_and_anchors(rendered):
    links = rendered[0][0]["links"]
    assert len(links) == len(STAGES)  # one link per stage
    assert {urlsplit(link).path for link in links} == {
        "concepts.html",
        "algorithm_selection.html",
        "mnist_implementation.html",
        "metrics.html",
        "deployment.html",
    }
    for link in links:
        parts = urlsplit(link)
        assert not parts.scheme and not parts.netloc, f"{link} leaves the book"
        target = (PAGE.parent / unquote(parts.path)).resolve() if parts.path else PAGE
        assert target.is_file(), f"{link} -> {target} was not built"
        if parts.fragment:
            assert f'id="{parts.fragment}"' in target.read_text(encoding="utf-8"), link
