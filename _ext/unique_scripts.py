"""Write each script tag once per page.

Sphinx 7.4 adds a script that an extension registered after the builder started (sphinx-thebe's
and sphinx-togglebutton's configuration lines) twice: once as it is registered and once more when
it prepares writing, the second time with filename "" instead of None, so its duplicate check
misses it. The second `const THEBE_JS_URL = ...` is a SyntaxError on every page; this drops the
second copy.
"""

from typing import Any

from docutils import nodes
from sphinx.application import Sphinx

Key = tuple[str, int, tuple[tuple[str, str], ...]]


def _key(script: Any) -> Key:
    """What makes two script tags the same: file (None and "" alike), priority, attributes."""
    return (script.filename or "", script.priority, tuple(sorted(script.attributes.items())))


def drop_duplicates(
    app: Sphinx,
    pagename: str,
    templatename: str,
    context: dict[str, Any],
    doctree: nodes.document | None,
) -> None:
    """Keep the first of each group of identical script tags on the page."""
    scripts = context.get("script_files")
    if not scripts:
        return
    unique: dict[Key, Any] = {}
    for script in scripts:
        unique.setdefault(_key(script), script)
    scripts[:] = unique.values()  # the builder's own list: it restores it after the page


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the extension; it runs after every other page-context handler."""
    app.connect("html-page-context", drop_duplicates, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
