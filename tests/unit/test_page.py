"""The discovery page's shell (``GET /``): public, self-contained, locked down by its CSP.

What the page shows is tested in a real browser: tests/integration/test_discovery_page.py.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi.testclient import TestClient

from streamer.serve.api import create_api
from streamer.serve.page import page_html


def test_page_is_public_while_the_data_routes_need_the_token():
    with TestClient(create_api({}, token="s3cret")) as c:
        r = c.get("/")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/html")
        assert "<title>streamer · discovery</title>" in r.text
        assert c.get("/v1/types").status_code == 401
        assert c.get("/v1/types", headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_page_loads_nothing_from_elsewhere():
    html = page_html()
    # no external script, style sheet, font, image or frame: the machine may be offline
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert not re.search(r"@import|url\(", html, re.I)
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html
    assert "document.write" not in html and "eval(" not in html


def test_csp_allows_exactly_the_pages_own_inline_script_and_style():
    with TestClient(create_api({})) as c:
        r = c.get("/")
    csp = dict(d.strip().split(" ", 1) for d in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self'"
    for tag in ("script", "style"):
        bodies = re.findall(rf"<{tag}>(.*?)</{tag}>", r.text, flags=re.DOTALL)
        assert len(bodies) == 1
        digest = base64.b64encode(hashlib.sha256(bodies[0].encode()).digest()).decode()
        assert csp[f"{tag}-src"] == f"'sha256-{digest}'"
    assert r.headers["x-content-type-options"] == "nosniff"
