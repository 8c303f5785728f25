"""Every sentence the book quotes from the source article is in the article, word for word.

A quotation is any double-quoted text containing Chinese characters in a chapter's prose
(Markdown cells and Markdown pages). The article is not part of the repository: the test
reads it from $DLBOOK_ARTICLE or ../shared/article/ and skips, saying so, when it is absent.
"""

import json
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ARTICLE = Path(
    os.environ.get(
        "DLBOOK_ARTICLE", REPO.parent / "shared" / "article" / "000_e862cffdcca9d7da.txt"
    )
)
QUOTE = re.compile(r'["“]([^"”\n]*[\u4e00-\u9fff][^"”\n]*)["”]')


def _prose(path: Path) -> str:
    """The Markdown of a chapter: the cells of a notebook, or the page itself."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text()


def _squash(text: str) -> str:
    """Whitespace removed (the article wraps lines; the book wraps them elsewhere)."""
    return re.sub(r"\s+", "", text)


def quotations() -> list[tuple[str, str]]:
    """(chapter file name, quoted sentence) for every quotation in the book's prose."""
    found = []
    for path in sorted((REPO / "chapters").glob("*.ipynb")) + sorted(
        (REPO / "chapters").glob("*.md")
    ):
        found += [(path.name, m.group(1)) for m in QUOTE.finditer(_prose(path))]
    return found


def test_the_book_quotes_the_article():
    assert len(quotations()) >= 4  # the collector itself works


@pytest.mark.parametrize(("chapter", "quote"), quotations())
def test_every_quotation_is_in_the_article(chapter, quote):
    if not ARTICLE.is_file():
        pytest.skip(f"the source article is not here ({ARTICLE}); set DLBOOK_ARTICLE to check")
    article = _squash(ARTICLE.read_text(encoding="utf-8"))
    assert _squash(quote) in article, f"{chapter} quotes words the article does not contain"


def test_a_misquotation_is_caught(tmp_path):
    assert QUOTE.findall('it says "分布式计算" and "plain English"') == ["分布式计算"]
    if ARTICLE.is_file():
        assert _squash("分布式计算：如何将大规模数据") in _squash(ARTICLE.read_text())
        assert _squash("分布式计算保证百分之百的准确率") not in _squash(ARTICLE.read_text())
