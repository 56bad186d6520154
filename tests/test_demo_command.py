"""`portal demo`: the links it prints open the server it starts."""
from __future__ import annotations

import json

from tests.conftest import make_test_app


def test_the_demo_links_point_at_the_port_it_serves_on(tmp_path, monkeypatch):
    monkeypatch.delenv("PORTAL_BASE_URL", raising=False)
    app = make_test_app(f"sqlite:///{tmp_path / 'demo.sqlite3'}")
    with app.app_context():  # as the `portal` command gives it
        result = app.test_cli_runner().invoke(args=["demo", "--seed-only", "--json", "--port", "5077"])
    assert result.exit_code == 0, result.output
    seeded = json.loads(result.output)
    assert seeded["base_url"] == "http://127.0.0.1:5077"
    assert seeded["patients"] and all(p["link"].startswith("http://127.0.0.1:5077/r/") for p in seeded["patients"])
