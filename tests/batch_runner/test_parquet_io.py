"""Parquet helpers: every column type round-trips; writes are atomic; unreadable files are
InputErrors, unwritable targets OutputErrors."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch_runner.errors import InputError, OutputError, format_rows
from batch_runner.parquet_io import (
    atomic_parquet_writer,
    iter_batches,
    open_parquet,
    rejects_path,
    write_parquet_atomic,
)


def every_type_table(n: int = 7) -> pa.Table:
    """One column per Arrow type a request file may carry."""
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    return pa.table(
        {
            "s": pa.array([f"text {i} ü" if i % 3 else None for i in range(n)]),
            "ls": pa.array([f"large {i}" for i in range(n)], pa.large_string()),
            "i8": pa.array([i - 3 for i in range(n)], pa.int8()),
            "u32": pa.array(list(range(n)), pa.uint32()),
            "i64": pa.array([i * 10**12 if i % 2 else None for i in range(n)], pa.int64()),
            "f32": pa.array([i / 4 for i in range(n)], pa.float32()),
            "f64": pa.array([float("nan") if i == 1 else i * 1.5 for i in range(n)]),
            "b": pa.array([i % 2 == 0 if i != 4 else None for i in range(n)]),
            "bin": pa.array([bytes([i, 0, 255]) for i in range(n)], pa.binary()),
            "lst": pa.array([list(range(i)) if i != 2 else None for i in range(n)]),
            "st": pa.array([{"a": i, "b": f"x{i}"} for i in range(n)]),
            "nested": pa.array(
                [[{"role": "user", "content": str(i)}] for i in range(n)],
                pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())])),
            ),
            "ts": pa.array(
                [t0 + dt.timedelta(seconds=i) for i in range(n)], pa.timestamp("us", "UTC")
            ),
            "date": pa.array([dt.date(2026, 1, 1 + i) for i in range(n)], pa.date32()),
            "dec": pa.array([decimal.Decimal(f"{i}.25") for i in range(n)], pa.decimal128(9, 2)),
            "dict": pa.array([["a", "b", "c"][i % 3] for i in range(n)]).dictionary_encode(),
            "map": pa.array([[("k", i)] for i in range(n)], pa.map_(pa.string(), pa.int64())),
            "nulls": pa.nulls(n),
        }
    )


def test_write_parquet_atomic_round_trips_every_column_type(tmp_path):
    table = every_type_table()
    out = write_parquet_atomic(table, tmp_path / "every.parquet")
    back = pq.read_table(out)
    assert back.schema.names == table.schema.names
    for name in table.column_names:
        assert back[name].type == table[name].type, name
        assert back[name].to_pylist() == table[name].to_pylist() or name == "f64", name
    # NaN != NaN: compare the float column by position
    nan_free = [x for i, x in enumerate(back["f64"].to_pylist()) if i != 1]
    assert nan_free == [x for i, x in enumerate(table["f64"].to_pylist()) if i != 1]
    assert list(tmp_path.iterdir()) == [out], "no temporary file is left behind"


def test_write_creates_missing_directories_and_replaces_existing_file(tmp_path):
    target = tmp_path / "a" / "b" / "out.parquet"
    write_parquet_atomic(pa.table({"x": [1]}), target)
    write_parquet_atomic(pa.table({"x": [1, 2, 3]}), target)
    assert pq.read_table(target)["x"].to_pylist() == [1, 2, 3]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "results.parquet"
    write_parquet_atomic(pa.table({"x": [1, 2]}), target)
    before = target.read_bytes()

    def boom(self, table, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(pq.ParquetWriter, "write_table", boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_parquet_atomic(pa.table({"x": [9, 9, 9]}), target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.parquet"]


def test_atomic_writer_streams_batches_and_discards_on_error(tmp_path):
    target = tmp_path / "stream.parquet"
    schema = pa.schema([("x", pa.int64())])
    with atomic_parquet_writer(target, schema) as writer:
        for i in range(3):
            writer.write_batch(pa.record_batch([pa.array([i, i])], schema=schema))
        assert not target.exists(), "the target appears only on a clean exit"
    assert pq.read_table(target)["x"].to_pylist() == [0, 0, 1, 1, 2, 2]

    with pytest.raises(KeyError):
        with atomic_parquet_writer(target, schema) as writer:
            writer.write_batch(pa.record_batch([pa.array([7])], schema=schema))
            raise KeyError("stop")
    assert pq.read_table(target)["x"].to_pylist() == [0, 0, 1, 1, 2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stream.parquet"]


def test_unwritable_target_is_an_output_error(tmp_path):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    with pytest.raises(OutputError, match="cannot write"):
        write_parquet_atomic(pa.table({"x": [1]}), not_a_dir / "out.parquet")


_KILL_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np, pyarrow as pa
    from batch_runner.parquet_io import write_parquet_atomic
    rows = int(sys.argv[2])
    # Built once, so that nearly all of the loop's time is spent writing: a kill then lands
    # mid-write (a plain pq.write_table on the target fails this test on every kill).
    t = pa.table({"v": np.arange(rows), "s": np.arange(rows).astype(str)})
    first = True
    while True:
        write_parquet_atomic(t, sys.argv[1], compression="none")
        if first:
            print("first", flush=True)
            first = False
    """
)


def test_kill_9_during_writes_never_leaves_a_partial_file(tmp_path):
    """A writer killed at arbitrary points: the target is always a complete file."""
    target = tmp_path / "results.parquet"
    rows = 200_000
    for delay in (0.03, 0.07, 0.11, 0.17, 0.23):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_WRITER, str(target), str(rows)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert proc.stdout.readline().strip() == b"first"  # at least one complete write
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        table = pq.read_table(target)  # raises if the file is partial
        assert table.num_rows == rows
        assert table["v"].to_pylist()[-1] == rows - 1


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        ("results.parquet", "results.rejects.parquet"),
        ("dir/run.1.parquet", "dir/run.1.rejects.parquet"),
        ("results", "results.rejects.parquet"),
        ("results.pq", "results.pq.rejects.parquet"),
    ],
)
def test_rejects_path(out, expected):
    assert rejects_path(out) == Path(expected)


def test_iter_batches_reads_in_bounded_batches(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"x": list(range(10))}), path, row_group_size=4)
    batches = list(iter_batches(path, batch_size=3))
    assert all(b.num_rows <= 3 for b in batches)
    assert [x for b in batches for x in b.column(0).to_pylist()] == list(range(10))


def bad_files(tmp_path: Path) -> dict[str, Path]:
    text = tmp_path / "notes.parquet"
    text.write_text("id,prompt\n1,hello\n")
    empty = tmp_path / "empty.parquet"
    empty.write_bytes(b"")
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"prompt": ["x" * 100] * 1000}), good)
    truncated = tmp_path / "truncated.parquet"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2] + data[-8:])  # footer magic, body cut
    # A valid footer over a damaged body: the file opens, and reading its pages fails.
    many = tmp_path / "many.parquet"
    rows = [f"prompt number {i} " * 3 for i in range(50_000)]
    pq.write_table(pa.table({"prompt": rows}), many, compression="zstd", row_group_size=10_000)
    body = bytearray(many.read_bytes())
    middle = len(body) // 2
    body[middle : middle + 200] = bytes(x ^ 0xFF for x in body[middle : middle + 200])
    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(bytes(body))
    return {
        "missing": tmp_path / "nope.parquet",
        "directory": tmp_path,
        "text": text,
        "zero_bytes": empty,
        "truncated": truncated,
        "corrupt_body": corrupt,
    }


BAD_FILE_KINDS = ["missing", "directory", "text", "zero_bytes", "truncated", "corrupt_body"]


@pytest.mark.parametrize("kind", BAD_FILE_KINDS)
def test_unreadable_inputs_are_input_errors(tmp_path, kind):
    path = bad_files(tmp_path)[kind]
    with pytest.raises(InputError) as info:
        open_parquet(path)
        list(iter_batches(path, batch_size=1000))
    assert str(path) in info.value.format_message()
    assert "\n" not in info.value.format_message()


@pytest.mark.parametrize(
    ("ids", "count", "expected"),
    [
        (["a"], 1, "1 row (id: a)"),
        (["a", "b", "c"], 3, "3 rows (ids: a, b, c)"),
        ([f"r{i}" for i in range(5)], 120, "120 rows (ids: r0, r1, r2, r3, r4 and 115 more)"),
        (["x", "x"], 2, "2 rows (id: x)"),
        (["x", "x", "y"], 9, "9 rows (ids: x, y and 6 more)"),
        ([], 4, "4 rows"),
    ],
)
def test_format_rows(ids, count, expected):
    assert format_rows(ids, count) == expected
