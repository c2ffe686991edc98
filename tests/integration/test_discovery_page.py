"""The discovery page (``GET /``) in a real headless browser against a real ``streamer serve``.

The LastFM Asia follow stream goes through a real ``demo-cooc`` worker on real Kafka that
snapshots every 12,000 events and runs ``stability`` and ``metadata:lastfm-asia`` on each
snapshot, with an impossible bound on the metadata accuracy (so a drift alert fires).
Then a real ``streamer serve`` process serves the API and the page, and Debian's
``chromium`` (driven by Playwright, headless) checks what a person would see: the type
with its metadata, benchmark plots with their points and the alert, the open alerts, a
neighbour lookup whose rows are the API's own answer, the API's error for a bad id, and,
on a server with a bearer token, the 401 message until the token is entered. A full-page
screenshot is saved to ``benchmarks/out/discovery-page.png``.

Needs Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` and
``scripts/quickstart test`` install it when root) and the ``playwright`` Python package
(dev extra). Playwright's own browser download (``playwright install``) is never used.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.kafka_io import consume_all
from streamer.testing.procs import ServeProcess, WorkerProcess, fill_engagements

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "benchmarks" / "out" / "discovery-page.png"
CHROMIUM = Path(os.environ.get("STREAMER_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
TYPE = "demo-cooc"
EVERY = 12_000
TASKS = ["stability", "metadata:lastfm-asia"]
ALERT_SERIES = "metadata/lastfm-asia.accuracy"
DRIFT = {"rules": [{"match": ALERT_SERIES, "detectors": [], "min": 0.99}]}
TOKEN = "page-test-token"  # noqa: S105 - a test token for a loopback server
WAIT_MS = 30_000


# -- data: a worker run whose benchmark records the page plots -----------------------------
@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory) -> dict:
    prefix = f"page-{uuid.uuid4().hex[:8]}."
    state = tmp_path_factory.mktemp("state")
    wire = fill_engagements(kafka_bootstrap, prefix, "lastfm-asia")
    total = len(wire)
    env = {
        "STREAMER_BENCH__SNAPSHOT_EVERY_EVENTS": str(EVERY),
        "STREAMER_BENCH__SNAPSHOT_RETAIN": "2",
        "STREAMER_BENCH__TASKS": json.dumps(TASKS),
        "STREAMER_BENCH__DRIFT": json.dumps(DRIFT),
        "STREAMER_WORKER__BATCH_WITHIN_S": "0.5",
    }
    w = WorkerProcess(TYPE, bootstrap=kafka_bootstrap, state_dir=state, prefix=prefix,
                      group=f"{prefix}streamer-{TYPE}-v1", log_path=state / "worker.log",
                      extra_env=env)
    w.start()
    try:
        w.wait_bench_idle(2, metrics=w.wait_applied(total, timeout_s=300))
        rc = w.stop()
    finally:
        if w.alive():
            w.kill()
    assert rc == 0, w.tail_log()
    records = [json.loads(r.value) for r in consume_all(kafka_bootstrap, f"{prefix}benchmarks")]
    snapshots = [r for r in records if r["kind"] == "snapshot"]
    assert len(snapshots) >= 2, records
    items = collections.Counter(json.loads(v)["item_id"] for _k, v, _ts in wire)
    return {"prefix": prefix, "records": records, "snapshots": len(snapshots),
            "popular": f"i:{items.most_common(1)[0][0]}"}


def _get(url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url)  # noqa: S310 - loopback URL we built
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _live(types: dict) -> dict:
    """The /v1/types entry of TYPE's live version (the only one when there is no registry)."""
    return next(t for t in types["types"] if t["name"] == TYPE
                and t.get("status", "live") == "live")


def _ref(entry: dict) -> str:
    """``NAME.vN`` of an entry (the registry's ``ref``)."""
    return entry.get("ref", f"{entry['name']}.v{entry['version']}")


def _caught_up(entry: dict) -> bool:
    return bool((entry.get("freshness") or {}).get("caught_up", entry.get("caught_up")))


def _wait_ready(srv: ServeProcess, run: dict, token: str | None = None) -> dict:
    """Wait until serve has every vector and every benchmark record; return /v1/types."""
    want = collections.Counter(r["kind"] for r in run["records"])
    deadline = time.monotonic() + 120
    last: tuple = ()
    while time.monotonic() < deadline:
        assert srv.proc is not None and srv.proc.poll() is None, srv.log_path.read_text()
        try:
            _s, types = _get(f"{srv.url}/v1/types", token)
            _s, bench = _get(f"{srv.url}/v1/types/{TYPE}/benchmarks?limit=200", token)
            last = (types, {k: len(v) for k, v in bench.items() if isinstance(v, list)})
            t = _live(types)
            if (_caught_up(t) and t["entities"] > 0
                    and len(bench["snapshots"]) == want["snapshot"]
                    and len(bench["results"]) == want["result"] + want["error"]
                    and len(bench["alerts"]) == want["alert"]):
                return types
        except (OSError, KeyError, ValueError, StopIteration):
            pass
        time.sleep(0.3)
    msg = f"serve not ready: {last}; log:\n{srv.log_path.read_text()}"
    raise AssertionError(msg)


@pytest.fixture(scope="module")
def server(run, kafka_bootstrap: str, tmp_path_factory) -> Iterator[tuple[ServeProcess, dict]]:
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with ServeProcess(TYPE, bootstrap=kafka_bootstrap, prefix=run["prefix"],
                      log_path=log) as srv:
        yield srv, _wait_ready(srv, run)


# -- the browser -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pw():
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"the discovery page test needs Debian's chromium at {CHROMIUM}: "
                    "`apt-get install chromium` (scripts/quickstart test and .ci/run do it "
                    "when root), or set STREAMER_CHROMIUM to a Chromium binary", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the discovery page test needs the playwright package: "
                    "`.venv/bin/pip install -e '.[dev]'` (do not run `playwright install`: "
                    "the test drives Debian's chromium)", pytrace=False)
    with sync_playwright() as p:
        yield p


class Browser:
    """One fresh Chromium profile; records uncaught page errors and CSP violations."""

    def __init__(self, playwright, profile: Path):
        self.ctx = playwright.chromium.launch_persistent_context(
            str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 900})
        self.errors: list[str] = []
        self.page = self.ctx.pages[0] if self.ctx.pages else self.ctx.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("console", self._console)

    def _console(self, msg) -> None:
        if "Content Security Policy" in msg.text or "Refused to" in msg.text:
            self.errors.append(f"console: {msg.text}")

    def open(self, url: str, *, loaded: bool = True) -> None:
        self.page.goto(url)
        if loaded:
            self.page.wait_for_selector("body[data-loaded]", state="attached")

    def lookup(self, type_name: str, entity: str, k: int, kind: str) -> None:
        p = self.page
        p.select_option("#nb-type", type_name)
        p.fill("#nb-id", entity)
        p.fill("#nb-k", str(k))
        p.select_option("#nb-kind", kind)
        p.click("#nb-submit")
        p.wait_for_function(
            "() => document.querySelectorAll('[data-testid=nb-row]').length > 0"
            " || !document.getElementById('nb-error').hidden")


@pytest.fixture
def browser(pw, tmp_path) -> Iterator[Browser]:
    b = Browser(pw, tmp_path / "profile")
    try:
        yield b
    finally:
        b.ctx.close()


# -- tests -------------------------------------------------------------------------------
def test_page_lists_the_type_with_metadata_plots_and_alerts(server, run, browser):
    srv, types = server
    api_type = _live(types)
    b = browser
    b.open(srv.url + "/")
    p = b.page
    assert p.title() == "streamer · discovery"
    # one card per served type version, in the API's order
    cards = p.locator("[data-testid=type-card]")
    refs = [_ref(t) for t in types["types"]]
    assert cards.evaluate_all("els => els.map(e => e.dataset.ref)") == refs
    ref = _ref(api_type)
    card = p.locator(f"[data-testid=type-card][data-ref='{ref}']")
    assert card.locator("[data-testid=type-name]").inner_text() == TYPE
    # the card shows the entry exactly as the API sent it
    raw = json.loads(card.locator("[data-testid=raw-entry]").text_content())
    assert raw == api_type
    assert card.locator("[data-testid=type-description]").inner_text() == \
        api_type["description"]

    def field(name: str) -> str:
        return card.locator(f"[data-field='{name}']").inner_text()

    assert field("algorithm") == api_type["algorithm"]
    assert field("dim") == str(api_type["dim"]) == "64"
    assert field("entities").replace(",", "") == str(api_type["entities"])
    # freshness: event time of the newest event, its age behind the newest type, lag
    fresh = api_type.get("freshness") or api_type
    assert _caught_up(api_type) and field("caught_up") == "caught up"
    ts = fresh["last_event_ts"]
    assert field("last_event_ts") == \
        dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    newest = max((t.get("freshness") or t).get("last_event_ts") or 0 for t in types["types"])
    assert ts == newest and field("age") == "0 s (newest)"  # the only version with events
    if isinstance(fresh.get("lag"), int):
        n = fresh["lag"]
        assert field("lag") == f"{n:,} record{'' if n == 1 else 's'} behind"
    options = p.locator("#nb-type option").evaluate_all("els => els.map(e => e.value)")
    assert TYPE in options and len(options) == len(types["types"])
    # every field of the API's answer is on the card
    for key, value in api_type.items():
        if key in ("name", "ref", "description", "freshness", "latest_scores", "served"):
            continue
        if value not in (None, "", [], {}):
            assert card.locator(f"[data-field='{key}']").count() == 1, key
    if "versions" in api_type:  # every declared version, with its status
        assert card.locator("[data-field=versions] [data-testid=version]").all_inner_texts() \
            == [f"v{v['version']} {v['status']}" for v in api_type["versions"]]
    for key in api_type.get("latest_scores", {}):
        assert card.locator(f"[data-field='score-{key}']").count() == 1, key

    # one plot per task/dataset.metric series, a point per result, the alert marked
    results = [r for r in run["records"] if r["kind"] == "result"]
    acc = [r for r in results if r["task"] == "metadata"]
    plot = card.locator(f"[data-testid=plot][data-series='{ALERT_SERIES}']")
    assert plot.locator("[data-testid=plot-point]").count() == len(acc) >= 2
    assert plot.locator("[data-testid=plot-baseline]").count() == 1
    assert plot.locator("[data-testid=plot-alert]").count() >= 1
    series = {f"{r['task']}{'/' + r['dataset'] if r['dataset'] else ''}.{m}"
              for r in results for m, v in r["metrics"].items() if v is not None}
    shown = set(card.locator("[data-testid=plot]").evaluate_all(
        "els => els.map(e => e.dataset.series)"))
    assert shown == series
    assert f"{run['snapshots']} snapshots" in card.locator(
        "[data-testid=bench-summary]").inner_text()
    # the open alert, in the alerts panel
    rows = p.locator("[data-testid=alert-row]")
    assert rows.count() >= 1
    assert ALERT_SERIES in rows.first.inner_text()
    assert p.locator("#alerts-count").inner_text() == str(rows.count())
    assert b.errors == []


def test_neighbour_lookup_shows_the_apis_answer_and_its_errors(server, run, browser):
    srv, _types = server
    b = browser
    b.open(srv.url + "/")
    p = b.page
    item = run["popular"]
    status, want = _get(f"{srv.url}/v1/types/{TYPE}/neighbours/{item}?k=7&kind=item")
    assert status == 200 and len(want["neighbours"]) == 7
    b.lookup(TYPE, item, 7, "item")
    assert p.locator("#nb-error").is_hidden()
    rows = p.locator("[data-testid=nb-row]")
    assert rows.evaluate_all("els => els.map(e => e.dataset.id)") == \
        [n["id"] for n in want["neighbours"]]
    assert all(i.startswith("i:") and i != item for i in
               rows.evaluate_all("els => els.map(e => e.dataset.id)"))
    scores = [float(s) for s in p.locator("[data-testid=nb-score]").all_inner_texts()]
    assert scores == pytest.approx([n["score"] for n in want["neighbours"]], abs=1e-4)
    assert p.locator("#nb-summary").inner_text().startswith("7 neighbours of")
    # the TTL column flags what the API flags (demo-cooc has no TTL: none expired)
    flags = p.locator("[data-testid=nb-expired]").all_inner_texts()
    assert [f == "expired" for f in flags] == [n["expired"] for n in want["neighbours"]]
    # "fresh only" asks the API for fresh_only=true
    _s, fresh = _get(f"{srv.url}/v1/types/{TYPE}/neighbours/{item}?k=7&kind=item"
                     "&fresh_only=true")
    p.locator("[data-testid=nb-fresh]").check()
    b.lookup(TYPE, item, 7, "item")
    assert p.locator("#nb-summary").inner_text().endswith(", fresh only")
    assert rows.evaluate_all("els => els.map(e => e.dataset.id)") == \
        [n["id"] for n in fresh["neighbours"]]
    p.locator("[data-testid=nb-fresh]").uncheck()

    # a click on a neighbour looks up its own neighbours
    first = want["neighbours"][0]["id"]
    _s, want2 = _get(f"{srv.url}/v1/types/{TYPE}/neighbours/{first}?k=7&kind=item")
    p.locator("[data-testid=nb-link]").first.click()
    p.wait_for_function(
        f"() => document.querySelector('#nb-summary').textContent.includes({json.dumps(first)})")
    assert rows.evaluate_all("els => els.map(e => e.dataset.id)") == \
        [n["id"] for n in want2["neighbours"]]
    p.screenshot(path=str(_screenshot_path()), full_page=True)

    # an id the type does not have, and a malformed one: the API's one-line error
    for bad, code in (("i:no-such-node", 404), ("no-prefix", 400)):
        status, err = _get(f"{srv.url}/v1/types/{TYPE}/neighbours/"
                           f"{urllib.parse.quote(bad)}?k=7&kind=item")
        assert status == code and err["error"]
        b.lookup(TYPE, bad, 7, "item")
        assert p.locator("#nb-error").is_visible()
        assert p.locator("#nb-error").inner_text() == f"{err['error']} (HTTP {code})"
        assert rows.count() == 0
    assert b.errors == []
    _check_png(SCREENSHOT)


def test_token_protected_server_shows_401_until_the_token_is_entered(run, kafka_bootstrap,
                                                                     browser, tmp_path):
    srv = ServeProcess(TYPE, bootstrap=kafka_bootstrap, prefix=run["prefix"],
                       log_path=tmp_path / "serve.log")
    srv.env["STREAMER_API_TOKEN"] = TOKEN
    with srv:
        _wait_ready(srv, run, token=TOKEN)
        assert _get(f"{srv.url}/v1/types")[0] == 401
        b = browser
        b.open(srv.url + "/", loaded=False)
        p = b.page
        assert p.title() == "streamer · discovery"  # the page shell needs no token
        auth = p.locator("[data-testid=auth-error]")
        auth.wait_for(state="visible")
        assert auth.inner_text().startswith("401 Unauthorized: this API needs a bearer token")
        assert p.locator("[data-testid=type-card]").count() == 0
        assert p.locator("#nb-type option").count() == 0

        p.fill("#token", "wrong-token")
        p.click("#token-save")
        p.wait_for_function("() => document.querySelector('[data-testid=auth-error]')"
                            ".textContent.includes('refused the token')")
        assert p.locator("[data-testid=type-card]").count() == 0

        p.fill("#token", TOKEN)
        p.click("#token-save")
        p.wait_for_selector("body[data-loaded]", state="attached")
        assert auth.is_hidden()
        assert p.locator(f"[data-testid=type-card][data-type='{TYPE}']").count() == 1
        assert p.locator("[data-testid=plot-point]").count() >= 2
        assert p.evaluate("() => sessionStorage.getItem('streamer.apiToken')") == TOKEN
        _s, want = _get(f"{srv.url}/v1/types/{TYPE}/neighbours/{run['popular']}?k=3", TOKEN)
        b.lookup(TYPE, run["popular"], 3, "")
        assert p.locator("[data-testid=nb-row]").evaluate_all(
            "els => els.map(e => e.dataset.id)") == [n["id"] for n in want["neighbours"]]

        # the token survives a reload (sessionStorage), and "Forget" drops it
        b.open(srv.url + "/")
        assert p.locator("[data-testid=type-card]").count() == 1
        p.click("#token-clear")
        auth.wait_for(state="visible")
        assert "needs a bearer token" in auth.inner_text()
        assert p.locator("[data-testid=type-card]").count() == 0
    assert b.errors == []


def _screenshot_path() -> Path:
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    return SCREENSHOT


def _check_png(path: Path) -> None:
    from PIL import Image

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    with Image.open(path) as img:
        img.load()  # decodes every row: a truncated file raises here
        assert img.width == 1400 and img.height > 900, img.size  # full page, taller than view
        lo, hi = img.convert("L").getextrema()
        assert hi - lo > 100  # not a blank page
