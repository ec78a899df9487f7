"""thinkdiff.progress: the rate and ETA lines of the offline jobs, checked against figures worked out by hand."""

import pytest

from thinkdiff import progress
from thinkdiff.progress import Progress, format_duration


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0m00s"), (-5, "0m00s"), (59.9, "0m59s"), (61, "1m01s"), (120, "2m00s"), (3599, "59m59s"), (3600, "1h00m"),
    (7140, "1h59m"), (7200 + 119, "2h01m"),
])
def test_durations_read_as_minutes_and_seconds_below_an_hour_and_hours_and_minutes_above(seconds, text):
    assert format_duration(seconds) == text


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_line_every_30_s_and_at_the_end_with_rates_and_eta(monkeypatch, capsys):
    clock = Clock(100.0)
    monkeypatch.setattr(progress.time, "monotonic", clock)
    bar = Progress(total=10, label="stage A")  # a line at most every 30 s by default
    clock.now = 110.0
    bar.update(2, tokens=50)
    assert capsys.readouterr().out == ""  # 10 s since the start: too soon
    clock.now = 130.0
    bar.update(2, tokens=100)
    # 30 s since the start: 4 samples, 150 tokens; ETA 30 s / 4 samples * 6 samples left = 45 s
    assert capsys.readouterr().out == "stage A: 4/10 samples, 0.13 samples/s, 5.0 tokens/s, ETA 0m45s\n"
    clock.now = 140.0
    bar.update(1)
    assert capsys.readouterr().out == ""  # 10 s since the last line
    clock.now = 150.0
    bar.update(5, tokens=252)
    # the end, 20 s after the last line: 10 samples and 402 tokens in 50 s (8.04; a token more would read 8.1)
    assert capsys.readouterr().out == "stage A: 10/10 samples, 0.20 samples/s, 8.0 tokens/s, ETA 0m00s\n"


def test_the_eta_of_the_first_sample_is_its_time_times_the_samples_left(monkeypatch, capsys):
    clock = Clock(0.0)
    monkeypatch.setattr(progress.time, "monotonic", clock)
    bar = Progress(total=5, label="judge", every_s=0.0)
    clock.now = 10.0
    bar.update(1, tokens=3)
    assert capsys.readouterr().out == "judge: 1/5 samples, 0.10 samples/s, 0.3 tokens/s, ETA 0m40s\n"


def test_a_job_finished_at_once_prints_without_dividing_by_zero(monkeypatch, capsys):
    monkeypatch.setattr(progress.time, "monotonic", Clock(7.0))
    Progress(total=3, label="judge").update(3)
    assert capsys.readouterr().out == "judge: 3/3 samples, 3000000000.00 samples/s, 0.0 tokens/s, ETA 0m00s\n"  # 1 ns
