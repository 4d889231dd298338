"""Job progress: a live bar on a terminal, a bounded number of plain lines in a log file."""

import io
import re

from batch_runner.progress import JobProgress

LINE = re.compile(
    r"^rows (\d+)/200 \((\d+)%\)(  SLO \d+\.\d%)?(  [\d.]+ rows/s)?(  ETA \S+)?  elapsed \S+$"
)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def run(stream, clock, seconds_per_row, rows=200, **kw):
    with JobProgress(200, initial=200 - rows, stream=stream, clock=clock, **kw) as bar:
        bar.seed(met=[True] * (200 - rows), weight=[1.0] * (200 - rows), errors=0)
        for k in range(rows):
            clock.now += seconds_per_row
            bar.update(met=k % 4 != 0)
    return stream.getvalue()


def test_a_log_file_gets_one_plain_line_per_tenth_of_the_rows_when_rows_are_fast():
    text = run(io.StringIO(), FakeClock(), seconds_per_row=0.01)
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text  # no redraw frames
    assert all(LINE.match(line) for line in lines), lines
    # a start line, then one per 10 % of the rows (the last one is the 100 % line)
    assert len(lines) == 1 + 10
    assert [int(LINE.match(line).group(1)) for line in lines] == list(range(0, 201, 20))
    assert lines[-1].startswith("rows 200/200 (100%)  SLO 75.0%") and "ETA" not in lines[-1]
    middle = LINE.match(lines[5])
    assert middle.group(4) and middle.group(5)  # rate and ETA while rows remain


def test_slow_rows_get_a_line_every_ten_seconds_and_the_count_stays_bounded():
    text = run(io.StringIO(), FakeClock(), seconds_per_row=3.0)  # 600 s in all
    lines = text.splitlines()
    assert all(LINE.match(line) for line in lines), lines
    assert len(lines) <= 600 / 10 + 10 + 2
    assert len(lines) >= 600 / 12 - 1  # a row every 3 s: a line at the first row past 10 s
    assert "ETA 5m00s" in lines[len(lines) // 2]  # 0.33 rows/s with 100 rows to go
    assert lines[-1].startswith("rows 200/200 (100%)")


def test_a_resumed_job_counts_the_rows_done_before():
    lines = run(io.StringIO(), FakeClock(), seconds_per_row=0.5, rows=50).splitlines()
    assert lines[0].startswith("rows 150/200 (75%)  SLO 100.0%")
    assert lines[-1].startswith("rows 200/200 (100%)  SLO 93.5%")  # (150 + 37) / 200
    assert " 2.00 rows/s" in lines[-1]  # the rate counts this run's rows only


def test_a_terminal_keeps_the_live_bar_and_quiet_writes_nothing():
    text = run(Terminal(), FakeClock(), seconds_per_row=0.0)
    assert "\r" in text and "200/200" in text and "SLO=75.0%" in text
    assert run(io.StringIO(), FakeClock(), seconds_per_row=0.0, quiet=True) == ""


def test_write_prints_a_plain_line_in_a_log():
    stream = io.StringIO()
    with JobProgress(10, stream=stream) as bar:
        bar.write("engine restarted")
    assert "engine restarted\n" in stream.getvalue()
