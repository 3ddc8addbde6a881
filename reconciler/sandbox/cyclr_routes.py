"""The sandbox's Cyclr routes: which request reaches which `CyclrSandbox` call, and the answer it gets.

Routes (see docs/sandbox.md, "Cyclr"):
  POST /oauth/token                                   client_credentials → a 14-day bearer
  GET|POST /v1.0/accounts, GET|PUT|DELETE /v1.0/accounts/{id}, POST /v1.0/accounts/{id}/signintoken
  GET  /v1.0/connectors, POST /v1.0/connectors/{id}/install                        (X-Cyclr-Account)
  GET  /v1.0/account/connectors, GET|PUT|DELETE /v1.0/account/connectors/{id},
  POST /v1.0/account/connectors/{id}/properties                                      (X-Cyclr-Account)
  GET  /connectorauth/updateaccountconnectoroauth     302 to the provider's consent page
  GET  /connector/callback                            the provider's redirect: 302 to targetOrigin
  /_sandbox/cyclr/...                                 console and test actions
Owns: the route table, the bearer check on every /v1.0 call, which fault queue a request draws from, and errors
as `{"Message": ...}`. Must not: speak HTTP itself (the server sends the `Answer`: `app`) or hold Cyclr rules
(`cyclr`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from reconciler.sandbox.cyclr import CyclrSandbox
from reconciler.sandbox.cyclr_model import CyclrFailure
from reconciler.sandbox.model import Fault, is_graph, now
from reconciler.sandbox.seed import ExistingAccount, add_existing
from reconciler.sandbox.wire import Answer, Request

__all__ = ["CyclrRoutes"]


def _json(request: Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body: `{}`)."""
    try:
        data = json.loads(request.body) if request.body.strip() else {}
    except ValueError:
        raise CyclrFailure(400, "The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise CyclrFailure(400, "The request body must be a JSON object")
    return data


def _account(request: Request) -> str:
    """The X-Cyclr-Account header of an account-level call."""
    account = request.headers.get("x-cyclr-account")
    if not account:
        raise CyclrFailure(400, "The X-Cyclr-Account header is required")
    return account


Route = Callable[[CyclrSandbox, Request], Answer]


def _ok(body: object = None, status: int = 200) -> Answer:
    return Answer(status, body)


def _done(action: Callable[..., None], *args: Any) -> Answer:
    """A call that answers nothing: 200 with an empty body."""
    action(*args)
    return Answer(200)


# -- the Cyclr API ------------------------------------------------------------------------------------------------

_API: dict[tuple[str, tuple[str, ...]], Route] = {
    ("GET", ("accounts",)): lambda c, r: _ok(c.list_accounts()),
    ("POST", ("accounts",)): lambda c, r: _ok(c.create_account(_json(r))),
    ("GET", ("accounts", "*")): lambda c, r: _ok(c.account(r.args[0])),
    ("PUT", ("accounts", "*")): lambda c, r: _ok(c.update_account(r.args[0], _json(r))),
    ("DELETE", ("accounts", "*")): lambda c, r: _done(c.delete_account, r.args[0]),
    ("POST", ("accounts", "*", "signintoken")): lambda c, r: _ok(c.sign_in_token(r.args[0], now())),
    ("GET", ("connectors",)): lambda c, r: _ok(c.connectors),
    ("POST", ("connectors", "*", "install")): lambda c, r: _ok(c.install(_account(r), r.args[0], _json(r))),
    ("GET", ("account", "connectors")): lambda c, r: _ok(c.list_account_connectors(_account(r))),
    ("GET", ("account", "connectors", "*")): lambda c, r: _ok(c.account_connector(_account(r), r.args[0])),
    ("PUT", ("account", "connectors", "*")): lambda c, r: _ok(
        c.update_account_connector(_account(r), r.args[0], _json(r))
    ),
    ("DELETE", ("account", "connectors", "*")): lambda c, r: _done(c.delete_account_connector, _account(r), r.args[0]),
    ("POST", ("account", "connectors", "*", "properties")): lambda c, r: _done(
        c.set_property, _account(r), r.args[0], _json(r)
    ),
}


# -- console and test actions (/_sandbox/cyclr/...) ---------------------------------------------------------------


def _number(text: str) -> int:
    if not text.isdigit():
        raise CyclrFailure(404, f"Account connector {text} not found")
    return int(text)


def _partner(cyclr: CyclrSandbox, request: Request) -> Answer:
    data = _json(request)
    cyclr.set_partner(str(data.get("client_id") or ""), str(data.get("client_secret") or ""))
    return _ok({"client_id": data["client_id"]})


def _library(cyclr: CyclrSandbox, request: Request) -> Answer:
    data = _json(request)
    cyclr.set_library(int(data["authentication_id"]), str(data["client_id"]), str(data["client_secret"]))
    return _ok({"authentication_id": int(data["authentication_id"])})


def _existing(cyclr: CyclrSandbox, request: Request) -> Answer:
    return _ok({"accounts": add_existing(cyclr, [ExistingAccount.model_validate(_json(request))])}, 201)


def _console_property(cyclr: CyclrSandbox, request: Request) -> Answer:
    data = _json(request)
    cyclr.console_set_property(_number(request.args[0]), str(data["Name"]), str(data["Value"]))
    return _ok({"Id": int(request.args[0])})


def _console(action: Callable[[CyclrSandbox, int], None]) -> Route:
    def route(cyclr: CyclrSandbox, request: Request) -> Answer:
        action(cyclr, _number(request.args[0]))
        return _ok({"Id": int(request.args[0])})

    return route


_ADMIN: dict[tuple[str, tuple[str, ...]], Route] = {
    ("POST", ("partner",)): _partner,
    ("POST", ("library",)): _library,
    ("POST", ("expire-bearers",)): lambda c, r: _ok({"expired": c.expire_bearers()}),
    ("POST", ("accounts",)): _existing,
    ("POST", ("account-connectors", "*", "deauthenticate")): _console(CyclrSandbox.deauthenticate),
    ("POST", ("account-connectors", "*", "delete")): _console(CyclrSandbox.console_delete),
    ("POST", ("account-connectors", "*", "authenticate")): _console(CyclrSandbox.mark_authenticated),
    ("POST", ("account-connectors", "*", "properties")): _console_property,
    ("GET", ("issued",)): lambda c, r: _ok({"issued": [*c.issued, *c.provider.issued]}),
}


def _match(table: Mapping[tuple[str, tuple[str, ...]], Route], method: str, parts: tuple[str, ...]) -> tuple[
    Route | None, tuple[str, ...], bool
]:
    """(the route, the segments its `*` matched, whether the path exists under another method)."""
    known = False
    for (verb, pattern), route in table.items():
        if len(pattern) != len(parts) or not all(p in ("*", s) for p, s in zip(pattern, parts, strict=True)):
            continue
        if verb == method:
            return route, tuple(s for p, s in zip(pattern, parts, strict=True) if p == "*"), True
        known = True
    return None, (), known


class CyclrRoutes:
    """The Cyclr side of one sandbox server, whose own address is `service_url` (the connectorauth link and the
    provider's callback are served there)."""

    def __init__(self, cyclr: CyclrSandbox, service_url: str) -> None:
        self.cyclr = cyclr
        self.service_url = service_url.rstrip("/")

    @staticmethod
    def claims(parts: tuple[str, ...]) -> bool:
        """Whether the path is a Cyclr one (the rest of the server answers every other)."""
        return (
            (parts[:1] == ("v1.0",) and not is_graph(parts))
            or parts in (("oauth", "token"), ("connectorauth", "updateaccountconnectoroauth"), ("connector", "callback"))
            or parts[:2] == ("_sandbox", "cyclr")
        )

    @staticmethod
    def fault_queues(request: Request) -> tuple[str, ...]:
        """The fault queues (see `Fault`) a request draws from, most specific first; none for the sign-in pages and
        the console actions."""
        if request.parts == ("oauth", "token"):
            return ("cyclr-token",)
        if request.parts[:1] != ("v1.0",):
            return ()
        if request.method == "POST" and request.parts[1:2] == ("connectors",) and request.parts[-1:] == ("install",):
            return ("cyclr-install", "cyclr")
        return ("cyclr",)

    def next_fault(self, request: Request) -> Fault | None:
        """The queued fault this request draws: from its queues in order, for its account (`X-Cyclr-Account`)."""
        account = request.headers.get("x-cyclr-account")
        draws = (self.cyclr.provider.next_fault(queue, account) for queue in self.fault_queues(request))
        return next(filter(None, draws), None)

    @staticmethod
    def fault_body(fault: Fault) -> object:
        """The JSON body of a status fault's answer: Cyclr's `{"Message"}`."""
        return {"Message": fault.message or "sandbox fault"}

    def answer(self, request: Request, fault: Fault | None = None) -> Answer:
        """The answer to a claimed request; every failure is `{"Message": ...}` with its status (`fault`, the one
        the request drew when it lets it be carried out, changes nothing here)."""
        try:
            return self._route(request)
        except CyclrFailure as failure:
            return Answer(failure.status, {"Message": failure.message})
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else type(exc).__name__
            return Answer(400, {"Message": f"The request is invalid ({detail})"})

    def _route(self, request: Request) -> Answer:
        parts, cyclr = request.parts, self.cyclr
        if parts == ("oauth", "token") and request.method == "POST":
            return _ok(cyclr.issue_bearer(request.form(), now()))
        if parts == ("connectorauth", "updateaccountconnectoroauth") and request.method == "GET":
            where = cyclr.begin_sign_in(dict(request.params), self.service_url, now())
            return Answer(302, location=self.service_url + where)
        if parts == ("connector", "callback") and request.method == "GET":
            return Answer(302, location=cyclr.complete_sign_in(dict(request.params)))
        if parts[:1] == ("v1.0",):
            cyclr.check_bearer(request.headers.get("authorization"), now())
            table, rest = _API, parts[1:]
        elif parts[:2] == ("_sandbox", "cyclr"):
            table, rest = _ADMIN, parts[2:]
        else:
            raise CyclrFailure(405, "The requested resource does not support this method")
        route, args, known = _match(table, request.method, rest)
        if route is None:
            raise CyclrFailure(405 if known else 404, "The requested resource does not support this method"
                               if known else "No HTTP resource was found that matches the request URI")
        return route(cyclr, Request(request.method, parts, request.params, request.headers, request.body, args))
