"""The nbval sanitizers hide only what varies between runs (times, speedups), never results."""

import re
from pathlib import Path

import pandas as pd
from nbval.plugin import get_sanitize_patterns

CFG = Path(__file__).with_name("nbval_sanitize.cfg")


def sanitize(text: str) -> str:
    """Apply the sanitizers exactly as nbval does: its own parser, its order, re.sub."""
    for regex, replace in get_sanitize_patterns(CFG.read_text(encoding="utf-8")):
        text = re.sub(regex, replace, text)
    return text


def _table(seconds: list[float], accuracy: float) -> str:
    return repr(
        pd.DataFrame(
            {"test accuracy": [accuracy, 0.5], "training time": [f"{t:.1f} s" for t in seconds]}
        )
    )


def test_timings_in_a_right_aligned_column_compare_equal():
    assert sanitize(_table([4.9, 61.5], 0.9827)) == sanitize(_table([12.3, 130.2], 0.9827))


def test_results_are_never_hidden():
    assert sanitize(_table([4.9, 61.5], 0.9827)) != sanitize(_table([4.9, 61.5], 0.9828))
    assert sanitize("accuracy 0.9940 after 5 epochs") == "accuracy 0.9940 after 5 epochs"


def test_units_speedups_addresses_and_temporary_paths():
    assert sanitize("took 12.5 ms, 3.9× faster") == sanitize("took 7 ms, 11.2× faster")
    assert sanitize("<Model at 0x7f3a2b1c9d00>") == "<Model at 0x<ADDR>>"
    assert sanitize("wrote /tmp/tmpab12/cnn.onnx") == "wrote <TMP>"
    assert sanitize("5 samples") == "5 samples"  # an 's' that starts a word is not a unit
