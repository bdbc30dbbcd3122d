"""The json-file writer and reader together: what one writes the other reads back, across
rotations, with Docker's filters (streams, since/until, tail, timestamps) and follow."""
from __future__ import annotations

import json
import threading
import time

import pytest

from sampan.logs import jsonfile
from sampan.timefmt import parse_rfc3339


def _read(path, **kw):
    return list(jsonfile.read(str(path), **kw))


def test_lines_and_streams_round_trip(tmp_path):
    log = jsonfile.JsonLog(str(tmp_path / "c.log"))
    log.write("stdout", b"one\ntw")
    log.write("stderr", b"warn\n")
    log.write("stdout", b"o\nthree")
    log.close()  # flushes the unterminated "three"
    assert _read(tmp_path / "c.log") == [("stdout", b"one\n"), ("stderr", b"warn\n"), ("stdout", b"two\n"),
                                         ("stdout", b"three")]
    assert _read(tmp_path / "c.log", stdout=False) == [("stderr", b"warn\n")]
    assert _read(tmp_path / "c.log", stderr=False, tail=2) == [("stdout", b"two\n"), ("stdout", b"three")]
    assert _read(tmp_path / "c.log", tail=0) == []
    entry = json.loads((tmp_path / "c.log").read_text().splitlines()[0])
    assert set(entry) == {"log", "stream", "time"} and entry["time"].endswith("Z") and len(entry["time"]) == 30


def test_long_line_in_pieces(tmp_path):
    log = jsonfile.JsonLog(str(tmp_path / "c.log"))
    log.write("stdout", b"x" * (jsonfile.PARTIAL_MAX * 2 + 10) + b"\n")
    log.close()
    pieces = [data for _, data in _read(tmp_path / "c.log")]
    assert [len(p) for p in pieces] == [jsonfile.PARTIAL_MAX, jsonfile.PARTIAL_MAX, 11]
    assert b"".join(pieces) == b"x" * (jsonfile.PARTIAL_MAX * 2 + 10) + b"\n"


def test_rotation_keeps_max_file_and_reads_in_order(tmp_path):
    path = tmp_path / "c.log"
    log = jsonfile.JsonLog(str(path), max_size=4096, max_file=3)
    for n in range(1, 2001):
        log.write("stdout", b"%d\n" % n)
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.log", "c.log.1", "c.log.2"]
    assert all(p.stat().st_size <= 4096 for p in tmp_path.iterdir())
    kept = [int(data) for _, data in _read(path)]
    assert kept == list(range(kept[0], 2001)) and kept[0] > 1
    assert [int(d) for _, d in _read(path, tail=5)] == [1996, 1997, 1998, 1999, 2000]


def test_since_until_timestamps(tmp_path):
    path = tmp_path / "c.log"
    log = jsonfile.JsonLog(str(path))
    log.write("stdout", b"early\n")
    time.sleep(0.05)
    middle = time.time()
    time.sleep(0.05)
    log.write("stdout", b"late\n")
    log.close()
    assert _read(path, since=middle) == [("stdout", b"late\n")]
    assert _read(path, until=middle) == [("stdout", b"early\n")]
    assert _read(path, since=str(middle)) == [("stdout", b"late\n")]
    (stream, data), = _read(path, since=middle, timestamps=True)
    stamp, _, text = data.partition(b" ")
    assert text == b"late\n" and parse_rfc3339(stamp.decode()) >= middle


def test_follow_across_rotation_until_stopped(tmp_path):
    """A follower keeps every line, in order, across thousands of rotations of small files by
    a writer that stays within 40 lines of it (so never deletes a file before it is read):
    each rotation races the follower's look at the log (lines appended after its last read,
    names moving while it lists them, inode numbers reused at once)."""
    path = tmp_path / "c.log"
    log = jsonfile.JsonLog(str(path), max_size=2048, max_file=3)
    running = threading.Event()
    running.set()
    got: list[int] = []
    total = 3000

    def writer() -> None:
        for n in range(total):
            while n - len(got) > 40:
                time.sleep(0.0005)
            log.write("stdout", b"%d\n" % n)
        log.close()
        running.clear()

    reader = jsonfile.read(str(path), follow=True, is_running=running.is_set, wait=lambda t: time.sleep(0.001))
    thread = threading.Thread(target=writer)
    thread.start()  # (before the reader's first look: its start races the rotations too)
    for _, data in reader:
        got.append(int(data))  # (one by one: the writer watches how far the reader got)
    thread.join()
    assert got == list(range(total))


def test_follow_stops_on_request_and_until(tmp_path):
    path = tmp_path / "c.log"
    log = jsonfile.JsonLog(str(path))
    log.write("stdout", b"a\n")
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert _read(path, follow=True, is_running=lambda: True, stopped=stop.is_set) == [("stdout", b"a\n")]
    assert time.monotonic() - started < 2
    assert _read(path, follow=True, is_running=lambda: True, until=time.time() + 0.2) == [("stdout", b"a\n")]
    log.close()


def test_missing_log_reads_empty(tmp_path):
    assert _read(tmp_path / "none.log") == []
    assert _read(tmp_path / "none.log", follow=True) == []


@pytest.mark.parametrize("value,expected", [(None, 10 << 20), ("", 10 << 20), ("512k", 512 << 10), (4096, 4096),
                                            ("10m", 10 << 20), (0, 10 << 20)])
def test_size_option(value, expected):
    assert jsonfile.size_option(value) == expected


def test_bad_options():
    with pytest.raises(ValueError):
        jsonfile.size_option("ten")
    with pytest.raises(ValueError):
        jsonfile.count_option("0")
    with pytest.raises(ValueError):
        jsonfile.parse_tail("some")
    assert jsonfile.parse_tail("all") is None and jsonfile.parse_tail("-1") is None and jsonfile.parse_tail("3") == 3
