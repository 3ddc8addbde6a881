"""Answers no provider should send — JSON nested past any sane depth — are classified errors, never a crash."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from reconciler.auth.errors import ProviderError
from reconciler.auth.flows import FlowSettings, make_flow
from reconciler.auth.request import AuthorizationRequest
from reconciler.auth.verify import verify_token
from reconciler.catalog.files import load_catalog
from reconciler.tokens.model import TokenSet

CONNECTOR = load_catalog().connectors["microsoft-azure-devops"]
NESTED = b"[" * 100_000 + b"]" * 100_000


@pytest.fixture
def nested_server() -> Iterator[str]:
    """A token endpoint on 127.0.0.1 answering every POST with deeply nested JSON, under the status in its path."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(int(self.path.strip("/")))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(NESTED)))
            self.end_headers()
            self.wfile.write(NESTED)

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _answer(status: int) -> httpx.MockTransport:
    return httpx.MockTransport(
        lambda request: httpx.Response(status, content=NESTED, headers={"Content-Type": "application/json"})
    )


@pytest.mark.parametrize("flavour", ["azure-devops-oauth", "entra-id"])
@pytest.mark.parametrize("status", [200, 400])
def test_token_endpoint_answering_deeply_nested_json_is_a_provider_error(
    nested_server: str, flavour: str, status: int
) -> None:
    """Found by a review of every JSON read after fuzzing: this was a RecursionError (an internal error)."""
    settings = FlowSettings(
        flavour=CONNECTOR.auth[flavour],
        client_id="app",
        client_secret=SecretStr("secret"),
        redirect_uri="http://127.0.0.1:1/callback",
        authorize_url="https://login.example/authorize",
        token_url=f"{nested_server}/{status}",
        scopes=("vso.work_full",),
    )
    with httpx.Client() as http:
        flow = make_flow(settings, http, lambda: dt.datetime.now(dt.UTC))
        request = AuthorizationRequest("u", SecretStr("s"), settings.redirect_uri, "app", settings.scopes,
                                       SecretStr("v" * 50) if flavour == "entra-id" else None)
        with pytest.raises(ProviderError, match="HTTP"):
            flow.exchange("code", request)


def test_api_answering_deeply_nested_json_is_a_provider_error() -> None:
    """The verification call gets 200 with unreadable JSON: a protocol error naming the check."""
    tokens = TokenSet(access_token=SecretStr("at"))
    with httpx.Client(transport=_answer(200)) as http, pytest.raises(ProviderError, match="unusable JSON"):
        verify_token(http, CONNECTOR, "https://dev.example", {"organization": "o", "project": "p"}, ("vso.work",),
                     tokens)
