"""`streamer produce --file`: record timestamps of JSONL lines (pure, no Kafka)."""

from __future__ import annotations

import json
from pathlib import Path

from streamer.produce import _file_messages

T0 = 1_600_000_000  # 2020-09-13T12:26:40Z
MAX_TS = 1_700_000_000.0


def _write(tmp_path: Path, lines: list[str | bytes]) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines))
    return path


def _ev(user: str, ts: object) -> str:
    return json.dumps({"user_id": user, "item_id": "i", "action": "click", "ts": ts})


def test_record_timestamps_are_event_times_and_bad_lines_keep_their_place(tmp_path):
    lines = [
        b'{"user_id": "broken"',                  # 0: leading, unreadable: the first ts
        _ev("a", "x"),                            # 1: leading, bad ISO: the first ts
        _ev("b", T0),                             # 2: seconds
        _ev("c", (T0 + 1) * 1000),                # 3: milliseconds: the decoder refuses
        _ev("d", "9999-01-01T00:00:00Z"),         # 4: far future: refused
        _ev("e", "2020-09-13T12:26:45Z"),         # 5: ISO
        _ev("f", 946_684_799),                    # 6: before 2000: refused
        b'{"user_id": "\\ud800", "ts": 1600000009}',  # 7: a lone surrogate id, good ts
        _ev("g", True),                           # 8: a bool is no time
        b"",                                      # (empty lines are skipped)
        _ev("h", T0 + 10.5),                      # 9
    ]
    out = list(_file_messages(_write(tmp_path, lines), MAX_TS))
    assert [v for _, v, _ in out] == [x if isinstance(x, bytes) else x.encode()
                                      for x in lines if x != b""]
    assert [ts for _, _, ts in out] == [
        T0 * 1000, T0 * 1000, T0 * 1000, T0 * 1000, T0 * 1000, (T0 + 5) * 1000,
        (T0 + 5) * 1000, (T0 + 9) * 1000, (T0 + 9) * 1000, T0 * 1000 + 10_500]
    assert [k for k, _, _ in out] == [None, b"a", b"b", b"c", b"d", b"e", b"f", None, b"g",
                                      b"h"]


def test_a_file_without_any_readable_ts_leaves_the_time_to_the_broker(tmp_path):
    out = list(_file_messages(_write(tmp_path, [b"nope", _ev("a", "x")]), MAX_TS))
    assert [(k, ts) for k, _, ts in out] == [(None, None), (b"a", None)]
