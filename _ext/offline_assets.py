"""Serve MathJax and mermaid from the built book itself, so that it renders opened from disk.

The versions are pinned in the repository's `package.json` / `package-lock.json` and installed
with `npm ci` into `node_modules/`. This extension copies the files the pages load into
`_static/vendor/` and points Sphinx's `mathjax_path` and sphinxcontrib-mermaid at them.

Two constraints of a book opened as `file://` decide the choices below:

* MathJax renders with its `tex-svg` component: SVG output draws the glyphs itself, where the
  CommonHTML output loads web fonts, which browsers may refuse for `file://` pages.
* Browsers refuse to load ES modules from `file://`, and sphinxcontrib-mermaid's page script is a
  module that does `import mermaid from <url>`. So the page loads mermaid's classic bundle
  (`mermaid.min.js`, which sets `globalThis.mermaid`), and an import map sends that import to a
  `data:` module exporting the global. Served over HTTP the same pages work unchanged.
"""

import json
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.config import Config
from sphinx.errors import ExtensionError
from sphinxcontrib.mermaid import mermaid as mermaid_node

VENDOR = "vendor"  # under _static/
MATHJAX_ENTRY = "mathjax/tex-svg.js"
# The component, and what it may load on demand: TeX extensions (autoload), the menu's
# accessibility tools and speech rules.
MATHJAX_FILES = ("tex-svg.js", "input/tex/extensions", "a11y", "sre", "ui")
MERMAID_BUNDLE = "mermaid/mermaid.min.js"
MERMAID_MODULE = "mermaid/mermaid-global.mjs"  # what sphinxcontrib-mermaid's script imports
MERMAID_EXPORT = "export default globalThis.mermaid;\n"
SETUP_HINT = "run `npm ci` in {root} (it installs the versions pinned in package-lock.json)"


def _installed(folder: Path) -> str | None:
    """The version of the npm package in folder, or None when it is not installed."""
    manifest = folder / "package.json"
    if not manifest.is_file():
        return None
    return json.loads(manifest.read_text(encoding="utf-8"))["version"]


def _packages(root: Path) -> dict[str, Path]:
    """Each pinned npm package's folder, checked to hold the pinned version."""
    pins = json.loads((root / "package.json").read_text(encoding="utf-8"))["dependencies"]
    folders = {name: root / "node_modules" / name for name in pins}
    wrong = [
        f"{name} {pin} (found {_installed(folders[name]) or 'nothing'})"
        for name, pin in pins.items()
        if _installed(folders[name]) != pin
    ]
    if wrong:
        raise ExtensionError(
            f"offline_assets: the book serves its own MathJax and mermaid, and node_modules lacks "
            f"{', '.join(wrong)}: " + SETUP_HINT.format(root=root)
        )
    return folders


def _sources(root: Path) -> dict[str, Path]:
    """Each vendored path under _static/vendor/ -> the file or folder it is copied from."""
    folders = _packages(root)
    sources = {f"mathjax/{path}": folders["mathjax"] / "es5" / path for path in MATHJAX_FILES}
    sources[MERMAID_BUNDLE] = folders["mermaid"] / "dist" / "mermaid.min.js"
    missing = [str(src) for src in sources.values() if not src.exists()]
    if missing:
        raise ExtensionError(
            f"offline_assets: not found {missing}: " + SETUP_HINT.format(root=root)
        )
    return sources


def configure(app: Sphinx, config: Config) -> None:
    """Fail early without the npm packages; point MathJax and mermaid at the vendored copies."""
    app.offline_assets = _sources(Path(app.srcdir))  # type: ignore[attr-defined]
    config.mathjax_path = f"{VENDOR}/{MATHJAX_ENTRY}"
    config.mermaid_use_local = f"{VENDOR}/{MERMAID_MODULE}"


def add_mermaid_bundle(
    app: Sphinx,
    pagename: str,
    templatename: str,
    context: dict[str, Any],
    doctree: nodes.document | None,
) -> None:
    """Where sphinxcontrib-mermaid adds its script: mermaid's bundle, and the map to its global."""
    if doctree is not None and doctree.next_node(mermaid_node) is None:
        return  # the same test as sphinxcontrib-mermaid's (it adds its script without a doctree)
    app.add_js_file(f"{VENDOR}/{MERMAID_BUNDLE}", priority=400)
    module_url = context["pathto"](f"_static/{VENDOR}/{MERMAID_MODULE}", resource=True)
    if not module_url.startswith(("./", "../", "/")):
        module_url = "./" + module_url  # an import map reads a bare path as a package name
    data_url = "data:text/javascript," + quote(MERMAID_EXPORT.strip())
    imports = json.dumps({"imports": {module_url: data_url}})
    app.add_js_file(None, body=imports, type="importmap", priority=400)


def copy_assets(app: Sphinx, exception: Exception | None) -> None:
    """Copy the vendored files into the built book's _static folder."""
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / VENDOR
    for dest, src in app.offline_assets.items():  # type: ignore[attr-defined]
        out = target / dest
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, out, dirs_exist_ok=True)
        else:
            shutil.copy2(src, out)
    (target / MERMAID_MODULE).write_text(MERMAID_EXPORT, encoding="utf-8")


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the extension (after sphinx.ext.mathjax and sphinxcontrib.mermaid)."""
    app.setup_extension("sphinx.ext.mathjax")
    app.setup_extension("sphinxcontrib.mermaid")
    app.connect("config-inited", configure)
    app.connect("html-page-context", add_mermaid_bundle)
    app.connect("build-finished", copy_assets)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
