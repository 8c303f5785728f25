"""The appendix keeps up with the chapters: errata, FAQ, glossary and reading list.

* Every correction box in a chapter (an admonition of class `warning` about the article or about
  common beliefs) links to its rows of the errata page, and the errata page covers it: each
  section it cites (§) and each section of the book it points to as proof appear in the
  chapter's part of the errata page.
* Every question of the article's FAQ (§9.1 to §9.7) is answered, in order, with a link to
  evidence; every glossary term links to where it is explained; every reference of the
  article's §7 is in the reading list, corrected.
"""

import json
import re
from pathlib import Path

import pytest

CHAPTERS = Path(__file__).resolve().parents[1] / "chapters"
BOX = re.compile(
    r"^(:{3,})\{admonition\}(?P<title>.*)\n:class: warning\n(?P<body>.*?)^\1\s*$", re.M | re.S
)
REF = re.compile(r"\{ref\}`(?:[^`<]*<)?([\w-]+)>?`")
SECTION = re.compile(r"§\s?(\d+(?:\.\d+)*)")
LINK = re.compile(r"\{(?:ref|doc|glue:text|glue)\}`")


def prose(path: Path) -> str:
    """The Markdown of a chapter: its Markdown cells, or the page itself."""
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        return "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    return path.read_text(encoding="utf-8")


def correction_boxes() -> list[tuple[str, str, str]]:
    """(chapter stem, box title, box body) of every box that corrects the article or a belief."""
    boxes = []
    for path in sorted(CHAPTERS.glob("*.ipynb")):
        for m in BOX.finditer(prose(path)):
            if re.search(r"article|belief", m["title"], re.I):
                boxes.append((path.stem, m["title"].strip(), m["body"]))
    return boxes


def labelled_parts(page: str) -> dict[str, str]:
    """The text under each `(label)=` of a page, up to the next label."""
    parts = re.split(r"^\(([\w-]+)\)=\s*$", page, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


ERRATA = labelled_parts(prose(CHAPTERS / "errata.md"))


def errata_label(stem: str) -> str:
    """The label of a chapter's rows on the errata page."""
    return "errata-" + stem.replace("_", "-")


def test_the_collector_finds_the_boxes():
    stems = {stem for stem, _, _ in correction_boxes()}
    assert {"concepts", "math_derivations", "mnist_implementation", "metrics"} <= stems


@pytest.mark.parametrize(("stem", "title", "body"), correction_boxes())
def test_each_correction_box_links_to_its_errata_rows(stem, title, body):
    label = errata_label(stem)
    assert label in ERRATA, f"errata.md has no part ({label})= for the box {title!r} of {stem}"
    assert label in REF.findall(body), f"the box {title!r} of {stem} does not link to {label}"


@pytest.mark.parametrize(("stem", "title", "body"), correction_boxes())
def test_the_errata_cover_every_correction_of_the_box(stem, title, body):
    rows = ERRATA.get(errata_label(stem), "")
    proofs = set(REF.findall(body)) - {errata_label(stem)}
    missing = sorted(proofs - set(REF.findall(rows)))
    assert not missing, f"errata rows of {stem} do not link to {missing} (box {title!r})"
    sections = set(SECTION.findall(body))
    named = [s for s in sections if re.search(rf"(?<![\d.]){re.escape(s)}(?!\d)", rows)]
    missing = sorted(sections - set(named))
    assert not missing, f"errata rows of {stem} do not name §{missing} (box {title!r})"


def test_errata_rows_quote_the_article_with_sections():
    for label, rows in ERRATA.items():
        table = [line for line in rows.splitlines() if line.startswith("| ") and "---" not in line]
        for row in table:
            cells = [c.strip() for c in row.strip("|").split("|")]
            if cells[0] in ("§", ""):
                continue
            assert re.fullmatch(r"\d+(\.\d+)*(, \d+(\.\d+)*)*", cells[0]), f"{label}: {row}"
            assert LINK.search(cells[-1]), f"{label}: a row without a link to its proof: {row}"


def test_every_faq_question_of_the_article_is_answered_with_evidence():
    parts = labelled_parts(prose(CHAPTERS / "faq.md"))
    answers = [text for text in parts.values() if re.search(r"^### .*\(§9\.\d\)", text, re.M)]
    numbers = [re.search(r"\(§9\.(\d)\)", text)[1] for text in answers]
    assert numbers == [str(n) for n in range(1, 8)], "the FAQ answers §9.1 to §9.7 in order"
    readers = [text for text in parts.values() if text.startswith("\n### ") and "§9." not in text]
    assert len(readers) >= 4
    for text in answers + readers:
        assert LINK.search(text), f"an answer without a link to evidence: {text.strip()[:60]}"


def test_every_glossary_term_links_to_where_it_is_explained():
    page = prose(CHAPTERS / "glossary.md")
    body = page.split("```{glossary}", 1)[1].rsplit("```", 1)[0]
    entries = re.split(r"\n(?=\S)", body.strip())
    assert len(entries) >= 30
    for entry in entries:
        term, definition = entry.split("\n", 1)
        assert re.search(r"\{(ref|doc)\}`", definition), f"glossary: {term} links nowhere"


def test_chapters_link_their_terms_to_the_glossary():
    for path in sorted(CHAPTERS.glob("*.ipynb")):
        if path.stem in ("testing", "running"):
            continue
        assert "{term}`" in prose(path), f"{path.name} links no term to the glossary"


def test_the_reading_list_corrects_the_articles_references():
    page = prose(CHAPTERS / "reading.md")
    for key in (
        "goodfellow2016deep",
        "zhang2023d2l",
        "chollet2021deep",
        "devlin2019bert",
        "goodfellow2014gan",
        "srivastava2014dropout",
    ):
        assert f"`{key}`" in page, f"reading.md does not cite {key}"
