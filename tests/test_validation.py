"""The validation contract: measured values pass within their tolerance, fail outside it; exact
outputs fail on any change; chaotic ones are not compared. Last, the hook inside real nbval."""

import math
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

from dlbook import validation as V

pytest_plugins = ["pytester"]


def stream(text: str) -> dict:
    return {"output_type": "stream", "name": "stdout", "text": text}


def glued(name: str, text: str, tol: str | None = None) -> dict:
    metadata = {"scrapbook": {"name": name, "mime_prefix": "application/papermill.record/"}}
    if tol:
        metadata["dlbook"] = {"tolerance": tol}
    return {
        "output_type": "display_data",
        "metadata": metadata,
        "data": {"application/papermill.record/text/plain": text},
    }


def cell(*tags: str) -> dict:
    return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": ""}


def test_numbers_are_split_from_the_words_around_them():
    words, numbers = V.split_numbers("CNN: 421,738 parameters, test 0.9940, error 2.6e-15")
    assert numbers == [421_738, 0.994, 2.6e-15]
    assert words == ["CNN:", "parameters, test", ", error", ""]


@pytest.mark.parametrize(
    "stored, fresh, ok",
    [
        ("test accuracy 0.9823", "test accuracy 0.9827", True),  # another CPU: a few 1e-4
        ("test accuracy 0.9940", "test accuracy 0.9890", False),  # half a point lost
        ("test accuracy 0.9940", "validation accuracy 0.9940", False),  # the words are exact
        ("0.9823  0.9940", "0.9823", False),  # a number went missing
    ],
)
def test_accuracy_tolerance(stored, fresh, ok):
    assert (V.compare_text(stored, fresh, V.tolerance("accuracy")) is None) is ok


def test_float64_check_only_needs_to_be_at_machine_precision():
    tol = V.tolerance("float64")
    assert V.compare_text("max error 2.6e-15", "max error 8.9e-16", tol) is None
    assert V.compare_text("max error 2.6e-15", "max error 3.1e-09", tol) is not None


def test_a_gpu_may_move_some_classes_further():
    tol = V.tolerance("subset-accuracy")
    assert not tol.allows(0.90, 0.88) and tol.allows(0.90, 0.88, accelerator=True)
    assert not V.tolerance("accuracy").allows(0.994, 0.989, accelerator=True)


def test_exact_and_chaotic_classes():
    assert V.compare_text("101,770 parameters", "101,771 parameters", V.tolerance("exact"))
    assert V.compare_text("ratio 0.884", "ratio 0.636", V.tolerance("chaotic")) is None
    assert V.tolerance("metric").allows(math.nan, math.nan)


def test_unknown_classes_and_double_tags_are_errors():
    with pytest.raises(ValueError, match="unknown tolerance class 'acuracy'"):
        V.cell_tolerance(cell("tolerance:acuracy"))
    with pytest.raises(ValueError, match="keep one"):
        V.cell_tolerance(cell("tolerance:accuracy", "tolerance:metric"))
    with pytest.raises(ValueError, match="unknown tolerance class"):
        V.glue("x", 1.0, "fuzzy")


def test_every_class_states_its_reason():
    assert all(len(t.why) > 40 for t in V.TOLERANCES.values())


def test_glued_values_use_their_own_class_and_untagged_outputs_stay_exact():
    stored = [stream("MLP 0.9823\n"), glued("acc", "0.9823", "accuracy"), glued("n", "101770")]
    fresh = [stream("MLP 0.9827\n"), glued("acc", "0.9827", "accuracy"), glued("n", "101770")]
    problems, rest_old, rest_new = V.compare_outputs(cell(), stored, fresh)
    assert problems == []
    assert rest_old == [stored[0]] and rest_new == [fresh[0]]  # left for nbval's exact check
    fresh[2] = glued("n", "101771")
    problems, _, _ = V.compare_outputs(cell(), stored, fresh)
    assert len(problems) == 1 and "glue 'n'" in problems[0]


def test_a_tagged_cell_compares_its_other_outputs_within_its_class():
    stored = [stream("lr 0.001: validation accuracy 0.9840\n"), glued("ratio", "0.884", "chaotic")]
    fresh = [stream("lr 0.001: validation accuracy 0.9851\n"), glued("ratio", "0.636", "chaotic")]
    assert V.compare_outputs(cell("tolerance:accuracy"), stored, fresh) == ([], [], [])
    fresh[0] = stream("lr 0.001: validation accuracy 0.9700\n")
    problems, _, _ = V.compare_outputs(cell("tolerance:accuracy"), stored, fresh)
    assert len(problems) == 1 and "0.97 is too far from the stored 0.984" in problems[0]


def test_a_missing_or_renamed_glue_fails():
    stored = [glued("cnn_test_acc", "0.994", "accuracy")]
    problems, _, _ = V.compare_outputs(cell(), stored, [glued("cnn_acc", "0.994", "accuracy")])
    assert problems and "glued names differ" in problems[0]


def test_glue_writes_what_myst_nb_reads(monkeypatch):
    shown = []
    monkeypatch.setattr(
        "IPython.display.display", lambda data, raw, metadata: shown.append((data, metadata))
    )
    V.glue("cnn_test_acc", np.float64(0.994), "accuracy")  # numpy scalars become numbers
    V.glue("cnn_params", 421_738)
    (data, metadata), (_, exact_metadata) = shown
    assert data == {"application/papermill.record/text/plain": "0.994"}
    assert metadata["scrapbook"] == {
        "name": "cnn_test_acc",
        "mime_prefix": "application/papermill.record/",
    }
    assert metadata["dlbook"] == {"tolerance": "accuracy"} and "dlbook" not in exact_metadata


def _notebook(source: str, outputs: list[dict], tags: list[str]) -> str:
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell(source, metadata={"tags": tags})
    code.outputs, code.execution_count = [nbformat.from_dict(o) for o in outputs], 1
    nb.cells = [code]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nbformat.writes(nb)


def test_the_hook_inside_nbval(pytester):
    """Real nbval and a real kernel: within tolerance passes, outside fails, exact change fails."""
    pytester.makeconftest("import dlbook.validation\ndlbook.validation.install_nbval_hook()")
    within = [stream("test accuracy 0.9830\n")]
    pytester.makefile(
        ".ipynb",
        within=_notebook('print("test accuracy 0.9827")', within, ["tolerance:accuracy"]),
        outside=_notebook('print("test accuracy 0.9700")', within, ["tolerance:accuracy"]),
        exact=_notebook("print(101770)", [stream("101771\n")], []),
        glued=_notebook(
            'import dlbook as dl\ndl.glue("acc", 0.9827, "accuracy")',
            [glued("acc", "0.983", "accuracy")],
            [],
        ),
    )
    result = pytester.runpytest_subprocess(
        "--nbval", "--nbval-current-env", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=2, failed=2)
    out = result.stdout.str()
    assert "0.97 is too far from the stored 0.983" in out and "101771" in out


def test_the_repository_applies_the_contract_to_a_single_notebook(tmp_path):
    """`pytest --nbval one.ipynb` from the repository uses the tolerances, not only the suite."""
    repo = Path(__file__).resolve().parents[1]
    notebook = tmp_path / "one.ipynb"
    notebook.write_text(
        _notebook(
            'print("test accuracy 0.9827")',
            [stream("test accuracy 0.9830\n")],
            ["tolerance:accuracy"],
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(repo / "pyproject.toml"),
            "--rootdir",
            str(repo),
            "--nbval",
            str(notebook),
        ],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-2000:]
