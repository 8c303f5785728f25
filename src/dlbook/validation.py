"""Validation: how a re-executed chapter's outputs are compared with the stored ones.

`pytest --nbval` re-runs every chapter and compares each output with the committed one. What
"the same" means depends on what the output is:

* **exact** (the default): parameter counts, shapes, sizes, integer facts, error messages.
  Compared character for character, after the timing sanitizers of `tests/nbval_sanitize.cfg`.
* **measured**: anything downstream of floating-point training or reduction order. Every number
  must lie within the tolerance of its class (`TOLERANCES`) of the stored number; the words
  around the numbers are compared exactly.
* **chaotic**: values that a different reduction order legitimately moves by a lot. Not
  compared; the chapter's claim about them is an `assert` in the cell.

A glued value declares its class where it is glued, `dl.glue("cnn_test_acc", acc, "accuracy")`;
every other output of a cell takes the cell's tag `tolerance:<class>`; the rest is exact.
The class is read from the *committed* notebook: the stored output is the contract.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

TAG_PREFIX = "tolerance:"  # a cell tag such as `tolerance:accuracy`
METADATA_KEY = "dlbook"  # output metadata: {"dlbook": {"tolerance": "accuracy"}}


@dataclass(frozen=True)
class Tolerance:
    """How far a re-executed number may be from the stored one: |new - old| <= atol + rtol*|old|."""

    atol: float
    rtol: float
    why: str  # the reasoning behind the numbers, shown in the book's testing page
    gpu_atol: float | None = None  # on CUDA or MPS, when a GPU may move the value further
    gpu_rtol: float | None = None
    compare: bool = True  # False: chaotic, the numbers are not compared at all

    def bounds(self, accelerator: bool = False) -> tuple[float, float]:
        """(atol, rtol) on a CPU, or on a GPU if `accelerator`."""
        if not accelerator:
            return self.atol, self.rtol
        return (
            self.atol if self.gpu_atol is None else self.gpu_atol,
            self.rtol if self.gpu_rtol is None else self.gpu_rtol,
        )

    def allows(self, stored: float, fresh: float, accelerator: bool = False) -> bool:
        """Whether `fresh` is close enough to `stored` (on a GPU if `accelerator`)."""
        if not self.compare:
            return True
        if math.isnan(stored) or math.isnan(fresh):
            return math.isnan(stored) and math.isnan(fresh)
        atol, rtol = self.bounds(accelerator)
        return abs(fresh - stored) <= atol + rtol * abs(stored)


# One entry per kind of quantity; each says why its numbers are what they are.
TOLERANCES: dict[str, Tolerance] = {
    "exact": Tolerance(
        0.0,
        0.0,
        "The same on every machine: counts, shapes, sizes, integer "
        "facts, values computed on the meta device.",
    ),
    "float64": Tolerance(
        1e-12,
        1e-9,
        "float64 arithmetic without training: round-off differences of two "
        "implementations (manual gradients against autograd, our optimizers against "
        "torch.optim), whose claim is 'at machine precision', so any value below 1e-12 proves "
        "it; and float64 results (an optimizer's end point), equal to nine digits. The last "
        "digits depend on summation order, vector width and fused multiply-add.",
    ),
    "float32": Tolerance(
        2e-4,
        1e-4,
        "float32 arithmetic without training, or a finite-difference check: the "
        "difference between two implementations of one computation (ONNX Runtime against "
        "PyTorch, finite differences against the manual gradient), whose claim is "
        "'round-off, far below anything that changes a prediction', so values below 2e-4 "
        "pass; and float32 results, equal to four digits. GPUs may use TF32 matrix products "
        "(10-bit mantissa), hence 2e-3 there.",
        gpu_atol=2e-3,
        gpu_rtol=1e-3,
    ),
    "accuracy": Tolerance(
        0.003,
        0.0,
        "Accuracy of a model trained on the full training set, measured on 5,000 "
        "validation or 10,000 test images. Another CPU reorders float sums, the weights drift "
        "as if from another seed, and the accuracy moves in its third or fourth decimal. "
        "0.3 points covers that, and a regression of half a point still fails.",
    ),
    "subset-accuracy": Tolerance(
        0.015,
        0.0,
        "Accuracy of a short or small-data run (a training subset, one to three "
        "epochs, an RNN or a small ViT), or on a small evaluation subset (2,000 images, a "
        "rare class). Such runs swing by up to a point between seeds and kernels.",
        gpu_atol=0.03,
    ),
    "metric": Tolerance(
        0.003,
        0.15,
        "A metric of a trained model other than accuracy: log loss, ECE, F1, AUC, "
        "temperature, a train-test gap, a precision on a rare class. Within 15% of the stored "
        "value, plus 0.003 for values near zero (an ECE of a few thousandths moves by about "
        "0.002 between two floating-point paths): the shape of the claim, not its last digit.",
        gpu_atol=0.006,
        gpu_rtol=0.3,
    ),
    "count": Tolerance(
        10.0,
        0.25,
        "A count that depends on which images a trained model gets wrong: errors, "
        "disagreements between two models (McNemar), steps until a loss level. A few images "
        "more or less on another machine.",
        gpu_atol=20.0,
        gpu_rtol=0.5,
    ),
    "chaotic": Tolerance(
        math.inf,
        0.0,
        "Moved a lot by a different reduction order: a trained RNN's gradient "
        "ratio, a weight hash, a p-value, which pairs of classes are confused most, an "
        "accuracy far outside the training distribution, a threshold set by a few images. "
        "Not compared; the chapter asserts what it claims about them.",
        compare=False,
    ),
    "machine": Tolerance(
        math.inf,
        0.0,
        "Says where the chapter ran: the device (cpu, cuda, mps), thread count, "
        "library versions. Different on every machine by design, so not compared.",
        compare=False,
    ),
}

# A number as printed: 1,234 or -0.5 or 2.6e-15 (thousands separators kept together).
NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def tolerance(name: str) -> Tolerance:
    """The tolerance class `name`; a clear error naming the known ones otherwise."""
    if name not in TOLERANCES:
        raise ValueError(f"unknown tolerance class {name!r}; use one of {', '.join(TOLERANCES)}")
    return TOLERANCES[name]


def split_numbers(text: str) -> tuple[list[str], list[float]]:
    """The words between numbers (whitespace collapsed) and the numbers themselves."""
    words, numbers, start = [], [], 0
    for match in NUMBER.finditer(text):
        words.append(" ".join(text[start : match.start()].split()))
        numbers.append(float(match.group().replace(",", "")))
        start = match.end()
    words.append(" ".join(text[start:].split()))
    return words, numbers


def compare_text(stored: str, fresh: str, tol: Tolerance, accelerator: bool = False) -> str | None:
    """None if `fresh` matches `stored` under `tol`, else a sentence saying what differs."""
    if not tol.compare:
        return None
    if tol.atol == 0 and tol.rtol == 0:
        return None if stored == fresh else "the output differs (exact comparison)"
    stored_words, stored_numbers = split_numbers(stored)
    fresh_words, fresh_numbers = split_numbers(fresh)
    if len(stored_numbers) != len(fresh_numbers):
        return f"{len(stored_numbers)} numbers stored, {len(fresh_numbers)} new"
    for old_text, new_text in zip(stored_words, fresh_words):
        if old_text != new_text:
            return f"the text around the numbers differs: stored {old_text!r}, new {new_text!r}"
    for old, new in zip(stored_numbers, fresh_numbers):
        if not tol.allows(old, new, accelerator):
            atol, rtol = tol.bounds(accelerator)
            return f"{new:g} is too far from the stored {old:g} (atol {atol:g}, rtol {rtol:g})"
    return None


def cell_tolerance(cell: dict[str, Any]) -> str | None:
    """The class named by a cell's `tolerance:<class>` tag, if any."""
    names = [
        t[len(TAG_PREFIX) :]
        for t in cell.get("metadata", {}).get("tags", [])
        if t.startswith(TAG_PREFIX)
    ]
    if len(names) > 1:
        raise ValueError(f"a cell has {len(names)} tolerance tags ({', '.join(names)}); keep one")
    for name in names:
        tolerance(name)  # a misspelt tag is an error, never a silent exact comparison
    return names[0] if names else None


def output_tolerance(output: dict[str, Any]) -> str | None:
    """The class a glued output declares in its metadata, if any."""
    name = output.get("metadata", {}).get(METADATA_KEY, {}).get("tolerance")
    if name is not None:
        tolerance(name)
    return name


def glue_name(output: dict[str, Any]) -> str | None:
    """The glue name of a myst-nb glue output, else None."""
    return output.get("metadata", {}).get("scrapbook", {}).get("name")


def glue(name: str, value: Any, tol: str = "exact", display: bool = False) -> None:
    """myst-nb's `glue`, plus the tolerance class `tol` that `pytest --nbval` applies to it."""
    import IPython
    from myst_nb.ext.glue import GLUE_PREFIX

    tolerance(tol)  # fail now, in the chapter, on a misspelt class
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        value = value.item()  # np.float64(0.98) -> 0.98: myst-nb formats Python numbers only
    bundle, metadata = IPython.core.formatters.format_display_data(value)
    prefix = "" if display else GLUE_PREFIX
    metadata["scrapbook"] = {"name": name, "mime_prefix": prefix}
    if tol != "exact":
        metadata[METADATA_KEY] = {"tolerance": tol}
    IPython.display.display({prefix + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)


def _texts(output: dict[str, Any], skip: tuple[str, ...]) -> dict[str, str]:
    """The comparable texts of one output, by key: a stream's name or a MIME type."""
    if output.get("output_type") == "stream":
        return {output["name"]: output["text"]}
    if output.get("output_type") == "error":
        return {"error": f"{output.get('ename')}: {output.get('evalue')}"}
    return {
        k: v if isinstance(v, str) else str(v)
        for k, v in output.get("data", {}).items()
        if k not in skip
    }


def _compare_lists(
    stored: list[dict],
    fresh: list[dict],
    tol_of,
    sanitize,
    accelerator: bool,
    skip: tuple[str, ...],
    label,
) -> list[str]:
    """Compare outputs pairwise: same keys, and each text within its tolerance."""
    problems = []
    for old, new in zip(stored, fresh):
        old_texts, new_texts = _texts(old, skip), _texts(new, skip)
        if old_texts.keys() != new_texts.keys():
            problems.append(
                f"{label(old)}: output kinds {sorted(old_texts)} became {sorted(new_texts)}"
            )
            continue
        for key, text in old_texts.items():
            problem = compare_text(
                sanitize(text), sanitize(new_texts[key]), tol_of(old), accelerator
            )
            if problem:
                problems.append(
                    f"{label(old)} [{key}]: {problem}\n  stored: {text.strip()[:300]}"
                    f"\n  new:    {new_texts[key].strip()[:300]}"
                )
    return problems


def compare_outputs(
    cell: dict[str, Any],
    stored: list[dict],
    fresh: list[dict],
    sanitize=str,
    accelerator: bool = False,
    skip: tuple[str, ...] = ("image/png",),
) -> tuple[list[str], list[dict], list[dict]]:
    """Compare a cell's glued values, and its other outputs if the cell is tagged.

    Returns the problems found and the outputs left for an exact comparison (those of an
    untagged cell that are not glued). Streams must already be merged by name, as nbval does.
    """
    cell_tol = cell_tolerance(cell)
    glued_old = [o for o in stored if glue_name(o)]
    glued_new = [o for o in fresh if glue_name(o)]
    rest_old = [o for o in stored if not glue_name(o)]
    rest_new = [o for o in fresh if not glue_name(o)]
    problems = []
    names_old, names_new = [glue_name(o) for o in glued_old], [glue_name(o) for o in glued_new]
    if names_old != names_new:
        problems.append(f"glued names differ: stored {names_old}, new {names_new}")
    else:
        problems += _compare_lists(
            glued_old,
            glued_new,
            lambda o: tolerance(output_tolerance(o) or cell_tol or "exact"),
            sanitize,
            accelerator,
            skip,
            lambda o: f"glue {glue_name(o)!r}",
        )
    if cell_tol is None:
        return problems, rest_old, rest_new
    if len(rest_old) != len(rest_new):
        problems.append(f"{len(rest_old)} outputs stored, {len(rest_new)} new")
    else:
        problems += _compare_lists(
            rest_old,
            rest_new,
            lambda o: tolerance(cell_tol),
            sanitize,
            accelerator,
            skip,
            lambda o: f"output ({cell_tol})",
        )
    return problems, [], []


def pytest_configure(config) -> None:
    """Entry point of this module as a pytest plugin (`-p dlbook.validation` in pyproject.toml).

    Registered for every run from the repository, so that `pytest --nbval chapters/x.ipynb`
    follows the same contract as the whole suite.
    """
    install_nbval_hook()


def install_nbval_hook() -> None:
    """Make nbval judge glued values and tagged cells by this module; the rest stays nbval's."""
    import torch
    from nbval.plugin import IPyNbCell

    if getattr(IPyNbCell.compare_outputs, "dlbook", False):
        return
    exact = IPyNbCell.compare_outputs
    accelerator = torch.cuda.is_available() or torch.backends.mps.is_available()

    def compare(self, test, ref, skip_compare=None):
        skip = tuple(skip_compare or self.parent.skip_compare)
        problems, rest_ref, rest_test = compare_outputs(
            self.cell, ref, test, sanitize=self.sanitize, accelerator=accelerator, skip=skip
        )
        exact_ok = exact(self, rest_test, rest_ref, skip_compare)  # resets comparison_traceback
        self.comparison_traceback = problems + self.comparison_traceback
        return exact_ok and not problems

    setattr(compare, "dlbook", True)  # noqa: B010 (marks the wrapper: never wrap twice)
    IPyNbCell.compare_outputs = compare
