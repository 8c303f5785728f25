import json
import subprocess
import sys

import nbformat
import pytest

from dlbook import execute


def _notebook(path, body: str):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('device = "auto"\nsmoke = False\nfactor = 2')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell('print("smoke is", smoke)'),
        nbformat.v4.new_code_cell(body),
    ]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)
    return path


@pytest.fixture
def chapters(tmp_path):
    folder = tmp_path / "chapters"
    folder.mkdir()
    _notebook(folder / "a_good.ipynb", "print(21 * factor)")
    return folder


def test_runs_a_chapter_with_parameters_and_writes_a_report(chapters, tmp_path):
    out = tmp_path / "out"
    code = execute.main(
        ["--chapters-dir", str(chapters), "--output-dir", str(out), "--smoke", "--device", "cpu"]
    )
    assert code == 0
    executed = nbformat.read(out / "a_good.ipynb", as_version=4)
    texts = ["".join(o.get("text", "")) for c in executed.cells for o in c.get("outputs", [])]
    assert "smoke is True\n" in texts and "42\n" in texts
    report = json.loads((out / "run-report.json").read_text())
    run = report["runs"][0]
    assert run["chapter"] == "a_good" and run["status"] == "ok" and run["device"] == "cpu"
    assert run["parameters"] == {"device": "cpu", "smoke": True}
    assert run["wall_seconds"] > 0 and run["peak_memory_mb"] > 10
    assert str(tmp_path) not in (out / "a_good.ipynb").read_text()  # no machine paths committed
    assert executed.metadata["papermill"]["input_path"] == "a_good.ipynb"


def test_failure_names_chapter_and_cell_and_keeps_the_original(
    chapters, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(execute, "repo_root", lambda: tmp_path)  # the build folder goes here
    bad = _notebook(chapters / "b_bad.ipynb", 'raise RuntimeError("boom")')
    before = bad.read_text()
    code = execute.main(["--chapters-dir", str(chapters), "--inplace"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 1
    assert (
        'chapter b_bad failed at cell 2 (`raise RuntimeError("boom")`): RuntimeError: boom' in err
    )
    assert bad.read_text() == before  # a failed run never replaces the chapter
    assert not (chapters / "b_bad.failed.ipynb").exists()  # nbval would collect it there
    assert (tmp_path / "_build" / "executed" / "b_bad.failed.ipynb").is_file()
    assert "the failed run is kept in" in captured.out


def test_unavailable_device_is_a_clear_error(chapters, capsys, monkeypatch):
    monkeypatch.setattr(
        execute,
        "resolve_device",
        lambda name: (_ for _ in ()).throw(
            ValueError(f"device {name!r} was requested but is not available on this machine")
        ),
    )
    assert execute.main(["--chapters-dir", str(chapters), "--device", "cuda"]) == 2
    assert "error: device 'cuda' was requested but is not available" in capsys.readouterr().err


def test_unknown_chapter_and_bad_arguments(chapters):
    with pytest.raises(
        SystemExit, match="chapter 'nope' matches 0 notebooks; give a path or one of: a_good"
    ):
        execute.main(["--chapters-dir", str(chapters), "nope"])
    with pytest.raises(SystemExit) as err:
        execute.main(["--inplace", "--output-dir", "x"])
    assert err.value.code == 2


def test_command_line(chapters, tmp_path):
    """The real CLI, as a user types it: bad device name, then a good run."""
    bad = subprocess.run(
        [sys.executable, "-m", "dlbook.execute", "--device", "tpu"], capture_output=True, text=True
    )
    assert bad.returncode == 2 and "invalid choice: 'tpu'" in bad.stderr
    good = subprocess.run(
        [
            sys.executable,
            "-m",
            "dlbook.execute",
            "--chapters-dir",
            str(chapters),
            "--output-dir",
            str(tmp_path / "o"),
            "a_good",
        ],
        capture_output=True,
        text=True,
    )
    assert good.returncode == 0, good.stderr
    assert "a_good" in good.stdout and "ok" in good.stdout


def test_book_chapters_follow_the_toc():
    from dlbook.runtime import repo_root

    names = [p.stem for p in execute.toc_notebooks(repo_root())]
    assert "mnist_implementation" in names


def test_inplace_with_default_parameters_adds_no_cell(chapters, tmp_path, monkeypatch):
    monkeypatch.setattr(execute, "repo_root", lambda: tmp_path)  # the report goes here
    assert execute.main(["--chapters-dir", str(chapters), "--inplace"]) == 0
    nb = nbformat.read(chapters / "a_good.ipynb", as_version=4)
    assert len(nb.cells) == 3  # no papermill "injected-parameters" cell
    assert nb.cells[2].outputs[0]["text"] == "42\n"


def test_smoke_inplace_is_refused_unless_forced(capsys, chapters):
    with pytest.raises(SystemExit) as err:
        execute.main(["--smoke", "--inplace"])
    assert err.value.code == 2
    assert "would replace the chapters' full-run outputs" in capsys.readouterr().err
    args = execute.parse_args(["--smoke", "--inplace", "--force"])
    assert args.smoke and args.inplace


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--timeout", "0"], "--timeout: must be an integer > 0, got 0"),
        (["--timeout", "-5"], "--timeout: must be an integer > 0, got -5"),
        (["--chapters-dir", "/no/such/folder"], "--chapters-dir /no/such/folder is not a folder"),
    ],
)
def test_bad_runner_arguments_are_named(capsys, argv, message):
    with pytest.raises(SystemExit) as err:
        execute.main(argv)
    assert err.value.code == 2 and message in capsys.readouterr().err


def test_output_dir_that_is_a_file_or_an_empty_chapters_dir(capsys, tmp_path, chapters):
    a_file = tmp_path / "report.txt"
    a_file.write_text("not a folder")
    with pytest.raises(SystemExit) as err:
        execute.main(["--chapters-dir", str(chapters), "--output-dir", str(a_file)])
    assert err.value.code == 2 and "is a file; give a folder" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no notebooks to run in .*empty"):
        execute.main(["--chapters-dir", str(empty), "--device", "cpu"])


def test_machine_summary_names_cpu_kernels_and_versions():
    info = execute.machine_summary("cpu")
    assert info["cpu"] and info["threads"] >= 1 and info["torch"].startswith("2.")
    assert info["aten_cpu_capability"] in {"DEFAULT", "AVX2", "AVX512", "ZVECTOR", "VSX", "SVE256"}
    assert "gpu" not in info


def test_inplace_runs_are_recorded_by_chapter_and_the_report_page_refreshed(tmp_path):
    chapters = tmp_path / "chapters"
    chapters.mkdir()
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: chapters/a_good\nchapters:\n"
        "  - file: chapters/b_old\n  - file: chapters/running\n"
    )
    _notebook(chapters / "a_good.ipynb", "print(21 * factor)")
    page = _notebook(
        chapters / "running.ipynb",
        'import json\nprint([r["chapter"] + ":" + str(r["wall_seconds"]) '
        'for r in json.load(open("run-report.json"))["runs"]])',
    )
    old = {"chapter": "b_old", "wall_seconds": 5.0}
    (chapters / "run-report.json").write_text(
        json.dumps({"runs": [old, {"chapter": "a_good", "wall_seconds": 1.0}]})
    )
    run = execute.ChapterRun("a_good", "cpu", {}, 2.5, 100.0, "ok")
    execute.record_inplace_runs(tmp_path, [run], timeout=None)
    runs = json.loads((chapters / "run-report.json").read_text())["runs"]
    assert [r["chapter"] for r in runs] == ["a_good", "b_old"]  # the book's order
    assert runs[0]["wall_seconds"] == 2.5 and runs[1] == old  # replaced by chapter, rest kept
    shown = nbformat.read(page, as_version=4).cells[2].outputs[0]["text"]
    assert shown == "['a_good:2.5', 'b_old:5.0']\n"
