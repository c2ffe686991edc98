"""Public data sets as engagement streams (``shared/data/README.md``, DESIGN §2).

=================  =========================  ===============  ==========  =======================
name               user_id -> item_id         ts (event s)     action      event_id
=================  =========================  ===============  ==========  =======================
``wikipedia``      editor -> page             base + col 3     ``edit``    ``wikipedia:<line>``
``collegemsg``     sender -> recipient        unix seconds     ``message`` ``collegemsg:<line>``
``enron``          sender -> recipient        base + col 3     ``email``   ``enron:<line>``
``lastfm-tags``    user -> artist             day 12:00 UTC    ``tag``     ``lastfm-tags:<line>``
``lastfm-plays``   user -> artist             base + row       ``listen``  ``lastfm-plays:<line>``
``lastfm-asia``    both directions of a       base + row       ``follow``  ``lastfm-asia:<line>:a``
                   mutual follow                                           and ``...:<line>:b``
``deezer``         as lastfm-asia             base + row       ``follow``  ``deezer:<line>:a|b``
=================  =========================  ===============  ==========  =======================

* ``base`` is :data:`EPOCH_BASE_S` = 2014-01-01T00:00:00Z: the Wikipedia and Enron
  streams count seconds from their start, and the files without time (plays, follow
  graphs) are spread one second apart in file order (``base + row``, row 0 = first
  data row; both directions of an edge share its time).
* ``<line>`` is the 1-based physical line number in the source file, so in files with
  a header the first data row is line 2. Each id is unique within its data set.
* Ids are the file's raw ids as strings (``"8228"``); namespacing into ``u:``/``i:``
  happens inside each embedding type (DESIGN §2). user->user sets (messages, e-mail,
  follows) name users as items.
* ``lastfm-plays`` weight = ``log1p(play count)``; every other weight is 1.0.
* ``lastfm-tags`` is emitted in event-time order (stable sort on the row's day, so
  ties keep file order). Its rows dated before 2005 (5 rows, years 1956-1979) are bad
  data: :func:`load_wire` emits them and the default decoder rejects them as
  ``bad_ts`` (``min_ts_s`` = 2000-01-01); :func:`load_events` skips them unless
  ``include_invalid=True``. Their Kafka record timestamp is clamped to 0 (Kafka
  refuses negative timestamps).

Data folder: ``data_dir`` argument, else env ``STREAMER_DATA_DIR``, else
``<repo>/../shared/data``, else the vendored ``<repo>/data`` (which holds only the
MIT-licensed ``lastfm-asia``). Research-only sets are never copied into the project.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NoReturn

from streamer.errors import ConfigError
from streamer.events.schema import EngagementEvent, to_wire

EPOCH_BASE_S: Final = 1_388_534_400.0
"""2014-01-01T00:00:00Z in seconds: the epoch base added to relative-time data sets."""

DATA_DIR_ENV: Final = "STREAMER_DATA_DIR"
"""Environment variable naming the folder that holds the data-set folders."""

FIRST_GOOD_TAG_YEAR: Final = 2005
"""lastfm-tags rows dated before this year are bad data (README: 5 rows)."""

_REPO_ROOT: Final = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class DatasetInfo:
    """Where a data set lives and how it maps to events.

    Attributes
    ----------
    name
        Data-set name used by :func:`load_events` (e.g. ``"wikipedia"``).
    folder, file
        Source file, relative to the data folder.
    action
        Action of every event.
    labels_file
        File with per-user labels (``id,target`` CSV), or ``None``.
    licence
        ``"MIT"`` (may be vendored) or ``"research"`` (read from a path only).
    """

    name: str
    folder: str
    file: str
    action: str
    labels_file: str | None = None
    licence: str = "research"


DATASETS: Final[dict[str, DatasetInfo]] = {
    d.name: d
    for d in (
        DatasetInfo("wikipedia", "temporal-streams", "ml_wikipedia.txt", "edit"),
        DatasetInfo("collegemsg", "temporal-streams", "CollegeMsg.txt", "message"),
        DatasetInfo("enron", "temporal-streams", "ml_enron.txt", "email"),
        DatasetInfo("lastfm-tags", "lastfm-hetrec2011", "user_taggedartists.dat", "tag"),
        DatasetInfo("lastfm-plays", "lastfm-hetrec2011", "user_artists.dat", "listen"),
        DatasetInfo("lastfm-asia", "lastfm-asia", "lastfm_asia_edges.csv", "follow",
                    labels_file="lastfm_asia_target.csv", licence="MIT"),
        DatasetInfo("deezer", "deezer-europe", "deezer_europe_edges.csv", "follow",
                    labels_file="deezer_europe_target.csv", licence="MIT"),
    )
}
"""Every supported data set, in documentation order."""


def dataset_names() -> tuple[str, ...]:
    """Return the names accepted by :func:`load_events`, in documentation order."""
    return tuple(DATASETS)


def dataset_info(name: str) -> DatasetInfo:
    """Return the :class:`DatasetInfo` of ``name``.

    Raises
    ------
    ConfigError
        If ``name`` is not a known data set.
    """
    try:
        return DATASETS[name]
    except KeyError:
        msg = f"unknown data set {name!r}; expected one of: {', '.join(DATASETS)}"
        raise ConfigError(msg) from None


def data_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Return the folders searched for data sets, in order.

    ``[data_dir]`` if given, else ``[$STREAMER_DATA_DIR]`` if set, else
    ``[<repo>/../shared/data, <repo>/data]``.
    """
    if data_dir is not None:
        return [Path(data_dir)]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return [Path(env)]
    return [_REPO_ROOT.parent / "shared" / "data", _REPO_ROOT / "data"]


def dataset_path(name: str, data_dir: str | os.PathLike[str] | None = None,
                 file: str | None = None) -> Path:
    """Return the path of a data set's source file (or of ``file`` in its folder).

    Raises
    ------
    ConfigError
        If the data set is unknown or the file is in none of :func:`data_dirs`; the
        message names the paths tried and the env var to set.
    """
    info = dataset_info(name)
    rel = Path(info.folder) / (file or info.file)
    tried = []
    for base in data_dirs(data_dir):
        path = base / rel
        if path.is_file():
            return path
        tried.append(str(path))
    msg = (f"data set {name!r}: file not found at {' or '.join(tried)}; set {DATA_DIR_ENV} "
           f"to the folder that contains {info.folder}/ (see shared/data/README.md)")
    raise ConfigError(msg)


def load_events(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    include_invalid: bool = False,
) -> Iterator[EngagementEvent]:
    """Yield a data set as engagement events, in stream order (see the module table).

    Parameters
    ----------
    name
        One of :func:`dataset_names`.
    data_dir
        Folder holding the data-set folders; default see :func:`data_dirs`.
    include_invalid
        Also yield the rows that are bad data (lastfm-tags before 2005), which the
        decoder rejects as ``bad_ts``.

    Yields
    ------
    EngagementEvent
        ``ts`` in event seconds since the epoch; ``event_id`` unique in the data set.

    Raises
    ------
    ConfigError
        If the name is unknown, the file is missing, or a row is malformed
        (the message gives the file and line).
    """
    for event, valid in _rows(name, data_dir):
        if valid or include_invalid:
            yield event


def load_wire(
    name: str, data_dir: str | os.PathLike[str] | None = None
) -> Iterator[tuple[bytes, bytes, int]]:
    """Yield a data set as Kafka messages ``(key, value, timestamp_ms)``, bad rows included.

    ``key`` is ``user_id`` (UTF-8), ``value`` is :func:`~streamer.events.schema.to_wire`
    of the event, ``timestamp_ms`` the event time in integer milliseconds (clamped
    to >= 0, as Kafka refuses negative record timestamps).

    Raises
    ------
    ConfigError
        As :func:`load_events`.
    """
    for event, _valid in _rows(name, data_dir):
        ts = event.ts
        ts_ms = int(round(ts * 1000.0)) if math.isfinite(ts) and ts > 0 else 0
        yield event.user_id.encode("utf-8"), to_wire(event), ts_ms


def load_labels(name: str, data_dir: str | os.PathLike[str] | None = None) -> dict[str, int]:
    """Return per-user class labels: ``{user_id: class}``.

    ``lastfm-asia``: country (18 anonymised classes, 0..17); ``deezer``: gender (0/1).

    Raises
    ------
    ConfigError
        If the data set has no labels or the file is missing/malformed.
    """
    info = dataset_info(name)
    if info.labels_file is None:
        have = ", ".join(n for n, d in DATASETS.items() if d.labels_file)
        msg = f"data set {name!r} has no user labels; labels exist for: {have}"
        raise ConfigError(msg)
    path = dataset_path(name, data_dir, info.labels_file)
    labels: dict[str, int] = {}
    for line_no, fields in _csv_rows(path, ",", header=True, width=2):
        try:
            labels[fields[0]] = int(fields[1])
        except ValueError:
            _malformed(path, line_no, fields, "an integer label")
    return labels


# ---------------------------------------------------------------------- readers
def _rows(
    name: str, data_dir: str | os.PathLike[str] | None
) -> Iterator[tuple[EngagementEvent, bool]]:
    info = dataset_info(name)
    path = dataset_path(name, data_dir)
    reader: Callable[[DatasetInfo, Path], Iterator[tuple[EngagementEvent, bool]]] = _READERS[name]
    return reader(info, path)


def _temporal(info: DatasetInfo, path: Path) -> Iterator[tuple[EngagementEvent, bool]]:
    """``src dst ts`` space-separated, no header (JODIE/SNAP temporal edge lists)."""
    base = 0.0 if info.name == "collegemsg" else EPOCH_BASE_S
    name, action = info.name, info.action
    for line_no, fields in _csv_rows(path, None, header=False, width=3):
        try:
            ts = base + float(fields[2])
        except ValueError:
            ts = math.nan
        if not math.isfinite(ts):
            _malformed(path, line_no, fields, "a number of seconds in column 3")
        yield EngagementEvent(fields[0], fields[1], action, ts, 1.0, 1, f"{name}:{line_no}"), True


def _lastfm_tags(info: DatasetInfo, path: Path) -> Iterator[tuple[EngagementEvent, bool]]:
    """``userID artistID tagID day month year`` (tab-separated, header)."""
    rows: list[tuple[float, EngagementEvent, bool]] = []
    days: dict[tuple[str, str, str], tuple[float, bool]] = {}  # (d, m, y) -> (ts, valid)
    name, action = info.name, info.action
    for line_no, fields in _csv_rows(path, "\t", header=True, width=6):
        dmy = (fields[3], fields[4], fields[5])
        known = days.get(dmy)
        if known is None:
            known = days[dmy] = _noon_utc(path, line_no, fields)
        ts, valid = known
        ev = EngagementEvent(fields[0], fields[1], action, ts, 1.0, 1, f"{name}:{line_no}")
        rows.append((-math.inf if math.isnan(ts) else ts, ev, valid))
    rows.sort(key=lambda r: r[0])  # stable: ties keep file order
    for _, ev, valid in rows:
        yield ev, valid


def _noon_utc(path: Path, line_no: int, fields: list[str]) -> tuple[float, bool]:
    """Return (12:00 UTC of the row's day in epoch seconds, whether the row is good data)."""
    try:
        day, month, year = int(fields[3]), int(fields[4]), int(fields[5])
    except ValueError:
        _malformed(path, line_no, fields, "integer day, month and year")
    try:
        ts = datetime(year, month, day, 12, tzinfo=UTC).timestamp()
    except ValueError:  # impossible calendar date: NaN, written as null, dead-lettered
        return math.nan, False
    return ts, year >= FIRST_GOOD_TAG_YEAR


def _lastfm_plays(info: DatasetInfo, path: Path) -> Iterator[tuple[EngagementEvent, bool]]:
    """``userID artistID weight`` (tab-separated, header); weight = play count."""
    for row, (line_no, fields) in enumerate(_csv_rows(path, "\t", header=True, width=3)):
        try:
            plays = int(fields[2])
        except ValueError:
            _malformed(path, line_no, fields, "an integer play count in column 3")
        if plays < 1:
            _malformed(path, line_no, fields, "a play count >= 1")
        yield EngagementEvent(fields[0], fields[1], info.action, EPOCH_BASE_S + row,
                              math.log1p(plays), 1, f"{info.name}:{line_no}"), True


def _follow_graph(info: DatasetInfo, path: Path) -> Iterator[tuple[EngagementEvent, bool]]:
    """``node_1,node_2`` (CSV, header), each undirected edge once: emit both directions."""
    name, action = info.name, info.action
    for row, (line_no, (a, b)) in enumerate(_csv_rows(path, ",", header=True, width=2)):
        ts = EPOCH_BASE_S + row
        yield EngagementEvent(a, b, action, ts, 1.0, 1, f"{name}:{line_no}:a"), True
        yield EngagementEvent(b, a, action, ts, 1.0, 1, f"{name}:{line_no}:b"), True


_READERS: Final = {
    "wikipedia": _temporal,
    "collegemsg": _temporal,
    "enron": _temporal,
    "lastfm-tags": _lastfm_tags,
    "lastfm-plays": _lastfm_plays,
    "lastfm-asia": _follow_graph,
    "deezer": _follow_graph,
}


def _csv_rows(
    path: Path, sep: str | None, *, header: bool, width: int
) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line number, fields)`` for non-blank lines; latin-1 never fails to decode."""
    with open(path, encoding="latin-1", newline="") as f:
        for line_no, line in enumerate(f, 1):
            if header and line_no == 1:
                continue
            fields = line.split() if sep is None else line.rstrip("\r\n").split(sep)
            if len(fields) != width or "" in fields:
                if not line.strip():
                    continue
                _malformed(path, line_no, fields, f"{width} non-empty fields")
            yield line_no, fields


def _malformed(path: Path, line_no: int, fields: list[str], expected: str) -> NoReturn:
    msg = f"{path}:{line_no}: malformed row {fields!r}; expected {expected}"
    raise ConfigError(msg)


# ---------------------------------------------------------------- benchmark side data
#: Data sets whose friend graph is a separate file (not part of the stream).
_FRIENDS_FILE: Final = {"lastfm-tags": "user_friends.dat", "lastfm-plays": "user_friends.dat"}


def load_user_tags(data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, str, str]]:
    """Return HetRec Last.fm tag assignments ``(user_id, artist_id, tag_id)``, good rows only.

    Reads ``lastfm-hetrec2011/user_taggedartists.dat`` (the ``lastfm-tags`` source) in
    file order and drops the rows that :func:`load_events` drops: dated before
    :data:`FIRST_GOOD_TAG_YEAR` or on an impossible calendar date. The tag ids are what
    the ``topic`` benchmark derives its labels from; they never enter the stream.

    Parameters
    ----------
    data_dir
        Folder holding the data-set folders; default see :func:`data_dirs`.

    Returns
    -------
    list of tuple of str
        Raw ids as in the file (``("2", "52", "13")``).

    Raises
    ------
    ConfigError
        If the file is missing or a row is malformed (message gives file and line).
    """
    path = dataset_path("lastfm-tags", data_dir)
    out: list[tuple[str, str, str]] = []
    for line_no, fields in _csv_rows(path, "\t", header=True, width=6):
        _ts, valid = _noon_utc(path, line_no, fields)
        if valid:
            out.append((fields[0], fields[1], fields[2]))
    return out


def friends_datasets() -> tuple[str, ...]:
    """Return the data sets :func:`load_friends` accepts, in documentation order."""
    return tuple(n for n in DATASETS if n in _FRIENDS_FILE or DATASETS[n].action == "follow")


def load_friends(name: str,
                 data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, str]]:
    """Return a data set's undirected friend/follow edges, each once, in file order.

    ``lastfm-tags`` / ``lastfm-plays``: HetRec ``user_friends.dat`` (both directions are
    listed there; an edge is kept at its first listing, as ``(userID, friendID)``).
    ``lastfm-asia`` / ``deezer``: the mutual-follow edge list the stream is made of
    (``(node_1, node_2)``, each edge listed once). Self-loops are dropped.

    Parameters
    ----------
    name
        One of :func:`friends_datasets`.
    data_dir
        Folder holding the data-set folders; default see :func:`data_dirs`.

    Returns
    -------
    list of tuple of str
        Raw user ids (not namespaced).

    Raises
    ------
    ConfigError
        If the data set has no friend graph, the file is missing or a row is malformed.
    """
    info = dataset_info(name)
    if name in _FRIENDS_FILE:
        path, sep = dataset_path(name, data_dir, _FRIENDS_FILE[name]), "\t"
    elif info.action == "follow":
        path, sep = dataset_path(name, data_dir), ","
    else:
        msg = (f"data set {name!r} has no friend graph; friend graphs exist for: "
               f"{', '.join(friends_datasets())}")
        raise ConfigError(msg)
    seen: set[tuple[str, str]] = set()
    edges: list[tuple[str, str]] = []
    for _line_no, (a, b) in _csv_rows(path, sep, header=True, width=2):
        key = (a, b) if a <= b else (b, a)
        if a != b and key not in seen:
            seen.add(key)
            edges.append((a, b))
    return edges
