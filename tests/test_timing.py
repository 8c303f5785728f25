import time

from dlbook import timing


def test_median_latency_is_a_median():
    calls = iter([0.0] * 3 + [0.01, 0.03, 0.02])

    def fn():
        time.sleep(next(calls))

    t = timing.median_latency(fn, warmup=3, repeats=3)
    assert 0.018 < t < 0.03
