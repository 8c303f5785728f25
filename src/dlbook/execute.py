"""Re-execute chapters with papermill on CPU or GPU and report time, memory and status.

    python -m dlbook.execute [--device auto|cpu|cuda|mps] [--smoke]
                             [--inplace | --output-dir DIR] [CHAPTER ...]

An `--inplace` run also records its lines in `chapters/run-report.json` (one line per chapter:
the run that produced its stored outputs) and refreshes the page that shows it.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import platform
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import papermill as pm
import psutil

from .runtime import DEVICES, repo_root, resolve_device

REPORT_PAGE = "running"  # chapters/running.ipynb shows chapters/run-report.json


@dataclass
class ChapterRun:
    """One line of the run report."""

    chapter: str
    device: str
    parameters: dict
    wall_seconds: float
    peak_memory_mb: float  # peak resident memory of the kernel process
    status: str  # 'ok' or 'failed'
    error: str = ""
    machine: dict | None = None  # where it ran: see machine_summary()
    finished: str = ""  # UTC date and time


def machine_summary(device: str) -> dict:
    """CPU model and instruction sets, the kernels torch picked, threads, versions, GPU name."""
    import torch

    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        text = cpuinfo.read_text(errors="replace")
        model = next(
            (
                line.split(":", 1)[1].strip()
                for line in text.splitlines()
                if line.startswith("model name")
            ),
            "",
        )
        flags = {
            f
            for line in text.splitlines()
            if line.startswith(("flags", "Features"))
            for f in line.split(":", 1)[1].split()
        }
    else:
        model = platform.processor()
    wanted = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")
    info = {
        "cpu": model or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": [f for f in wanted if f in flags],
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__.split("+")[0],
        "python": platform.python_version(),
        "os": platform.system(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


class PeakMemory:
    """Poll the resident memory of this process's children (the kernel) in a background thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            rss = 0
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # the child ended between list and read
                    rss += child.memory_info().rss
            self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def toc_notebooks(root: Path) -> list[Path]:
    """The book's notebooks in the order of _toc.yml."""
    import yaml

    def files(node) -> list[str]:
        if isinstance(node, dict):
            own = [node["file"]] if "file" in node else []
            return own + [f for value in node.values() for f in files(value)]
        return [f for item in node for f in files(item)] if isinstance(node, list) else []

    toc = yaml.safe_load((root / "_toc.yml").read_text())
    entries = [toc.get("root", "")] + files(toc.get("parts", toc.get("chapters", [])))
    return [root / f"{e}.ipynb" for e in entries if (root / f"{e}.ipynb").is_file()]


def find_chapters(names: list[str], every: list[Path]) -> list[Path]:
    """Notebook paths for names given as paths or stems (default: every chapter, in order)."""
    if not names:
        return every
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb":
            if not path.is_file():
                raise SystemExit(f"error: chapter file {path} does not exist")
            found.append(path)
            continue
        matches = [p for p in every if p.stem == name] or [p for p in every if name in p.stem]
        if len(matches) != 1:
            known = ", ".join(p.stem for p in every) or "none"
            raise SystemExit(
                f"error: chapter {name!r} matches {len(matches)} notebooks; "
                f"give a path or one of: {known}"
            )
        found.append(matches[0])
    return found


def chapter_parameters(path: Path, device: str, smoke: bool) -> dict:
    """Parameters to inject: those the `parameters` cell declares with a different default.

    Injecting nothing when the defaults already match keeps `--inplace` runs free of
    papermill's extra "injected-parameters" cell.
    """
    declared = pm.inspect_notebook(str(path))
    if not declared:
        raise SystemExit(f"error: {path} has no cell tagged 'parameters'")
    wanted = {"device": device, "smoke": smoke}
    return {k: v for k, v in wanted.items() if k in declared and _default(declared[k]) != v}


def _default(parameter: dict):
    """The literal default of a declared parameter (None if it is not a literal)."""
    try:
        return ast.literal_eval(parameter["default"])
    except (ValueError, SyntaxError):
        return None


def run_chapter(
    path: Path,
    output: Path,
    parameters: dict,
    timeout: int | None,
    device: str = "-",
    failed_dir: Path | None = None,
) -> ChapterRun:
    """Execute one chapter into `output`; a failed run goes to `failed_dir`, never over it.

    `failed_dir` defaults to the output's folder; for `--inplace` runs the caller passes the
    build folder, so that nbval and the book never pick up a half-run notebook.
    """
    tic = time.perf_counter()
    status, error = "ok", ""
    with tempfile.TemporaryDirectory() as scratch, PeakMemory() as memory:
        tmp = Path(scratch) / path.name  # never inside chapters/, where nbval would collect it
        try:
            pm.execute_notebook(
                str(path),
                str(tmp),
                parameters=parameters,
                cwd=str(path.parent),
                progress_bar=False,
                execution_timeout=timeout,
            )
        except pm.PapermillExecutionError as err:
            status = "failed"
            index = chapter_cell_index(tmp, err.cell_index)
            first_line = err.source.strip().splitlines()[0] if err.source.strip() else ""
            error = f"cell {index} (`{first_line[:60]}`): {err.ename}: {err.evalue}"
        except Exception as err:  # kernel died, timeout, unreadable notebook
            status, error = "failed", f"{type(err).__name__}: {err}"
        # Success replaces the output atomically; a failed run is kept for inspection elsewhere.
        target = output if status == "ok" else failed_copy(failed_dir or output.parent, path)
        if tmp.exists():
            part = target.with_name(f".{target.name}.part")
            _write_without_local_paths(tmp, part, path.name)
            os.replace(part, target)
    return ChapterRun(
        path.stem,
        device,
        parameters,
        round(time.perf_counter() - tic, 2),
        round(memory.peak / 2**20, 1),
        status,
        error,
    )


def failed_copy(folder: Path, chapter: Path) -> Path:
    """Where a failed run of `chapter` is kept."""
    return folder / f"{chapter.stem}.failed.ipynb"


def _write_without_local_paths(executed: Path, target: Path, name: str) -> None:
    """Copy an executed notebook, with papermill's absolute input/output paths made `name`."""
    import nbformat

    nb = nbformat.read(executed, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in meta:
            meta[key] = name
    nbformat.write(nb, target)


def chapter_cell_index(executed: Path, index: int) -> int:
    """Index of an executed cell in the chapter itself (papermill inserts one parameters cell)."""
    import nbformat

    cells = nbformat.read(executed, as_version=4).cells
    injected = [
        i
        for i, c in enumerate(cells)
        if "injected-parameters" in c.get("metadata", {}).get("tags", [])
    ]
    return index - 1 if injected and injected[0] < index else index


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m dlbook.execute", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "chapters",
        nargs="*",
        metavar="CHAPTER",
        help="notebook paths or name stems (default: every chapter)",
    )
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the smoke subset and one epoch: a quick check of every chapter",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--inplace", action="store_true", help="overwrite the chapters (only on success)"
    )
    where.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="write executed notebooks here (default: _build/executed)",
    )
    parser.add_argument(
        "--timeout", type=_positive_int, default=None, help="seconds allowed per cell (> 0)"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="with --smoke --inplace: replace the stored full-run outputs with smoke outputs",
    )
    parser.add_argument(
        "--chapters-dir",
        type=Path,
        default=None,
        help="run the notebooks of this folder instead of the book's (sorted by name)",
    )
    args = parser.parse_args(argv)
    if args.smoke and args.inplace and not args.force:
        parser.error(
            "--smoke --inplace would replace the chapters' full-run outputs with smoke "
            "outputs; use --output-dir for a smoke run (or add --force if you mean it)"
        )
    if args.chapters_dir is not None and not args.chapters_dir.is_dir():
        parser.error(f"--chapters-dir {args.chapters_dir} is not a folder")
    if args.output_dir is not None and args.output_dir.exists() and not args.output_dir.is_dir():
        parser.error(f"--output-dir {args.output_dir} is a file; give a folder (made if missing)")
    return args


def _positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be an integer > 0, got {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Run the chapters, print and write the report; exit status 1 if any chapter failed."""
    args = parse_args(argv)
    try:
        device = resolve_device(args.device).type  # fail early on a device this machine lacks
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    root = repo_root() or Path.cwd()
    every = sorted(args.chapters_dir.glob("*.ipynb")) if args.chapters_dir else toc_notebooks(root)
    # The report page shows runs; it is refreshed after them, not measured among them.
    every = [p for p in every if p.stem != REPORT_PAGE]
    chapters = find_chapters(args.chapters, every)
    if not chapters:
        raise SystemExit(f"error: no notebooks to run in {args.chapters_dir or root / '_toc.yml'}")
    out_dir = None if args.inplace else (args.output_dir or root / "_build" / "executed")
    report_dir = out_dir or root / "_build" / "executed"
    report_dir.mkdir(parents=True, exist_ok=True)
    runs, machine = [], machine_summary(device)
    for path in chapters:
        params = chapter_parameters(path, args.device, args.smoke)
        output = path if out_dir is None else out_dir / path.name
        print(f"running {path.stem} with {params} ...", flush=True)
        runs.append(run_chapter(path, output, params, args.timeout, device, report_dir))
        run = runs[-1]
        run.machine = machine
        run.finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        kept = failed_copy(report_dir, path)
        print(
            f"  {run.status} in {run.wall_seconds:.1f} s, peak memory {run.peak_memory_mb:.0f} MB"
            + (f"\n  FAILED at {run.error}" if run.error else "")
            + (f"\n  the failed run is kept in {kept}" if run.error and kept.exists() else ""),
            flush=True,
        )
    report = report_dir / "run-report.json"
    report.write_text(
        json.dumps(
            {
                "device_requested": args.device,
                "resolved": device,
                "runs": [asdict(r) for r in runs],
            },
            indent=1,
        )
    )
    print(format_report(runs))
    print(f"report written to {report}")
    if args.inplace and not args.chapters_dir:
        record_inplace_runs(root, [r for r in runs if r.status == "ok"], args.timeout)
    failed = [r for r in runs if r.status != "ok"]
    for run in failed:
        print(f"error: chapter {run.chapter} failed at {run.error}", file=sys.stderr)
    return 1 if failed else 0


def record_inplace_runs(root: Path, runs: list[ChapterRun], timeout: int | None) -> None:
    """Put these runs into chapters/run-report.json, by chapter, and refresh the report page."""
    committed = root / "chapters" / "run-report.json"
    lines = json.loads(committed.read_text())["runs"] if committed.is_file() else []
    lines = {line["chapter"]: line for line in lines}
    lines.update({run.chapter: asdict(run) for run in runs})
    order = [p.stem for p in toc_notebooks(root)]
    ordered = sorted(
        lines.values(),
        key=lambda run: order.index(run["chapter"]) if run["chapter"] in order else len(order),
    )
    committed.write_text(json.dumps({"runs": ordered}, indent=1) + "\n")
    page = root / "chapters" / f"{REPORT_PAGE}.ipynb"
    if runs and page.is_file():
        run = run_chapter(page, page, {}, timeout, failed_dir=root / "_build" / "executed")
        print(f"{committed.relative_to(root)} updated; {page.stem} page: {run.status} {run.error}")


def format_report(runs: list[ChapterRun]) -> str:
    """A plain-text table of the runs."""
    rows = [("chapter", "device", "parameters", "wall s", "peak MB", "status")]
    rows += [
        (
            r.chapter,
            r.device,
            json.dumps(r.parameters),
            f"{r.wall_seconds:.1f}",
            f"{r.peak_memory_mb:.0f}",
            r.status,
        )
        for r in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows)


if __name__ == "__main__":
    sys.exit(main())
