"""HTML + PNG benchmark reports."""

from __future__ import annotations

import re

import numpy as np
import pytest
from matplotlib.image import imread

from streamer.bench.drift import DriftMonitor
from streamer.bench.report import write_report
from streamer.bench.results import TaskResult
from streamer.errors import BadRequest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = 1_700_000_000.0


def _records(type_name: str = "cooc", n: int = 4) -> list[dict]:
    out = []
    for k in range(n):
        lp = TaskResult("linkpred", "wikipedia", {"mrr": 0.70 + 0.01 * k, "recall_at_10": 0.8},
                        {"edgebank_inf": {"mrr": 0.495}, "popularity": {"mrr": 0.04}}, n=100)
        st = TaskResult("stability", "", {"jaccard_at_10": 0.9 - 0.1 * k}, n=50)
        for res in (lp, st):
            out.append({**res.to_json(), "type": type_name, "version": 1, "snapshot": f"s{k}",
                        "event_time": T0 + 3600.0 * k,
                        "manifest": {"offsets": {"0": 100 * k}, "version": 1}})
    return out


def _pngs(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def test_report_writes_one_valid_png_per_series_and_an_html_page(tmp_path):
    alerts = [{"kind": "alert", "type": "cooc", "version": 1,
               "series": "stability.jaccard_at_10", "detector": "threshold", "value": 0.6,
               "at": 3, "event_time": T0 + 3 * 3600.0,
               "message": "stability.jaccard_at_10 fell below min 0.65 (0.6)"}]
    index = write_report("cooc", _records(), alerts, tmp_path / "rep")
    assert index == tmp_path / "rep" / "index.html"
    html = index.read_text()
    pngs = _pngs(html)
    assert len(pngs) == 3  # linkpred/wikipedia.mrr, .recall_at_10, stability.jaccard_at_10
    for name in pngs:
        path = tmp_path / "rep" / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        img = imread(path)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
        assert np.ptp(img[..., :3]) > 0  # not a blank canvas
    for series in ("linkpred/wikipedia.mrr", "linkpred/wikipedia.recall_at_10",
                   "stability.jaccard_at_10"):
        assert series in html
    assert "0.73" in html  # latest linkpred MRR
    assert "edgebank_inf 0.495" in html and "popularity 0.04" in html
    assert "fell below min 0.65 (0.6)" in html  # the alert table
    assert "offsets" in html  # latest manifest
    assert "<script" not in html and "http" not in html  # static, nothing external


def test_report_marks_alerts_on_the_plot(tmp_path):
    alerts = [{"series": "stability.jaccard_at_10", "detector": "adwin", "value": 0.6, "at": 3,
               "event_time": T0 + 3 * 3600.0, "message": "m"}]
    a = write_report("cooc", _records(), [], tmp_path / "a")
    write_report("cooc", _records(), alerts, tmp_path / "b")
    name = next(p for p in _pngs(a.read_text()) if "jaccard" in p)
    assert (tmp_path / "a" / name).read_bytes() != (tmp_path / "b" / name).read_bytes()
    other = next(p for p in _pngs(a.read_text()) if "recall" in p)
    assert (tmp_path / "a" / other).read_bytes() == (tmp_path / "b" / other).read_bytes()


def test_report_without_event_times_uses_sequence_axis(tmp_path):
    recs = [{"task": "prequential", "metrics": {"mrr": v}} for v in (0.3, 0.35, None, 0.4)]
    mon = DriftMonitor("sgns", 1, {"rules": [{"match": "*", "detectors": [], "min": 0.32}]})
    alerts = [a.to_json() for r in recs for a in mon.observe(r)]
    assert [a["at"] for a in alerts] == [0]
    index = write_report("sgns", recs, alerts, tmp_path)
    html = index.read_text()
    (png,) = _pngs(html)
    assert imread(tmp_path / png).shape[0] > 100
    assert "0.4" in html and "prequential.mrr" in html


def test_empty_results_give_a_page_saying_so(tmp_path):
    index = write_report("cooc", [], [], tmp_path)
    html = index.read_text()
    assert "No benchmark results for type <code>cooc</code> yet" in html
    assert "No drift alerts" in html
    assert list(tmp_path.glob("*.png")) == []


def test_records_of_other_types_are_skipped(tmp_path):
    recs = _records("cooc", 2) + [{**_records("sgns", 1)[0], "metrics": {"mrr": 0.123456}}]
    html = write_report("sgns", recs, [{"type": "cooc", "series": "x", "message": "nope"}],
                        tmp_path).read_text()
    assert "0.1235" in html and "0.71" not in html and "nope" not in html
    assert len(_pngs(html)) == 1


def test_names_and_messages_are_html_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    recs = [{"task": evil, "dataset": evil, "metrics": {evil: 0.5},
             "baselines": {evil: {evil: 0.1}}, "type": evil, "snapshot": evil,
             "event_time": T0, "manifest": {evil: evil}}]
    alerts = [{"type": evil, "series": evil, "detector": evil, "value": 0.1, "at": 0,
               "event_time": T0, "message": evil}]
    index = write_report(evil, recs, alerts, tmp_path)
    html = index.read_text()
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    (png,) = _pngs(html)
    assert re.fullmatch(r"[A-Za-z0-9._-]+\.png", png) and (tmp_path / png).is_file()


def test_bad_input_is_a_one_line_error(tmp_path):
    with pytest.raises(BadRequest, match="record 1 needs 'task'"):
        write_report("cooc", [_records()[0], {"metrics": {}}], [], tmp_path)
    with pytest.raises(BadRequest, match="must be a mapping"):
        write_report("cooc", ["nope"], [], tmp_path)  # type: ignore[list-item]
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadRequest, match="not a directory"):
        write_report("cooc", [], [], tmp_path / "file")
    with pytest.raises(BadRequest, match="non-empty string"):
        write_report("", [], [], tmp_path)
