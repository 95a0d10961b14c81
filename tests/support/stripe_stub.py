"""A local HTTP server answering as Stripe's API does, for the Stripe adapter's tests (never the network).

Objects are Stripe's own published examples (tests/fixtures/stripe_fixtures_subset.json, copied from
stripe/openapi's fixtures3.json) with only their existing fields changed, so a response never carries a field
Stripe's objects do not have. Every request and every answer is validated against Stripe's published OpenAPI
specification (tests/support/stripe_openapi.py): an unknown, missing or mistyped parameter, or an answer Stripe's
schema does not allow, is recorded as `invalid` (the request is answered 400) and fails the test.

Behaviour by payment method, as Stripe's test cards: `pm_card_visa` succeeds, `pm_card_chargeDeclined<Reason>`
declines with that decline code, `pm_card_authenticationRequired` needs SCA (402 authentication_required),
`pm_card_threeDSecureRequired` is left `requires_action`, `pm_timeout` answers after the client gave up,
`pm_server_error` is a 500, `pm_card_unavailableOnce` a 503 the first time a key is used (then it succeeds).
A POST's answer is kept by its Idempotency-Key (but a 5xx), as Stripe does.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from tests.support.stripe_openapi import check_request, check_response

FIXTURES = json.loads((Path(__file__).parents[1] / "fixtures" / "stripe_fixtures_subset.json").read_text())["resources"]
DECLINES = {"InsufficientFunds": "insufficient_funds", "LostCard": "lost_card", "StolenCard": "stolen_card",
            "ExpiredCard": "expired_card", "": "generic_decline"}


def stripe_object(kind: str, **changes) -> dict:
    """Stripe's example object with `changes`, which may only touch fields it has."""
    obj = copy.deepcopy(FIXTURES[kind])
    unknown = set(changes) - set(obj)
    assert not unknown, f"{kind} has no field {sorted(unknown)} in Stripe's published objects"
    obj.update(changes)
    return obj


def nested(pairs: list[tuple[str, str]]) -> dict:
    """Stripe's form encoding (`a[b][0][c]=v`) back to nested dicts and lists."""
    out: dict = {}
    for key, value in pairs:
        parts = re.findall(r"[^\[\]]+", key)
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return _lists(out)


def _lists(node):
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


@dataclass
class StripeStub:
    url: str = ""
    requests: list[dict] = field(default_factory=list)
    intents: dict[str, dict] = field(default_factory=dict)  # by id
    replies: dict[str, tuple[int, dict]] = field(default_factory=dict)  # by idempotency key
    counter: itertools.count = field(default_factory=lambda: itertools.count(1))
    unavailable: set[str] = field(default_factory=set)  # idempotency keys answered 503 once
    refunded: dict[str, int] = field(default_factory=dict)  # minor units refunded, by PaymentIntent id

    def answer(self, method: str, path: str, params: dict, headers: dict) -> tuple[int, dict, float]:
        """Stripe's answer; the request and the answer both held to Stripe's specification (SpecViolation)."""
        check_request(method, path, params)
        key = headers.get("idempotency-key")
        if method == "POST":
            assert key, f"{path}: a POST without an Idempotency-Key"
            if key in self.replies:
                return (*self.replies[key], 0.0)
        if params.get("payment_method") == "pm_card_unavailableOnce" and key not in self.unavailable:
            self.unavailable.add(key)  # Stripe saves no result for a request it did not start: a retry runs anew
            status, body, delay = 503, {"error": {"type": "api_error", "message": "Service unavailable"}}, 0.0
        else:
            status, body, delay = self._route(method, path, params)
        check_response(method, path, status, body)
        if method == "POST" and status < 500:
            self.replies[key] = (status, body)
        return status, body, delay

    def _route(self, method: str, path: str, params: dict) -> tuple[int, dict, float]:
        n = next(self.counter)
        if path == "/v1/payment_intents" and method == "POST":
            method_id = params["payment_method"]
            intent = stripe_object(
                "payment_intent", id=f"pi_stub{n:06d}", amount=int(params["amount"]), currency=params["currency"],
                customer=params["customer"], payment_method=method_id, metadata=params.get("metadata", {}),
                status="succeeded", amount_received=int(params["amount"]), last_payment_error=None,
                client_secret=f"pi_stub{n:06d}_secret_x", canceled_at=None, next_action=None)
            if method_id == "pm_server_error":
                return 500, {"error": {"type": "api_error", "message": "An unknown error occurred"}}, 0.0
            self.intents[intent["id"]] = intent
            if method_id == "pm_timeout":
                return 200, intent, 3.0
            if method_id == "pm_card_threeDSecureRequired":
                intent.update(status="requires_action", amount_received=0,
                              next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}})
                return 200, intent, 0.0
            reason = method_id.removeprefix("pm_card_chargeDeclined") if method_id.startswith(
                "pm_card_chargeDeclined") else None
            if method_id == "pm_card_authenticationRequired":
                code, decline = "authentication_required", "authentication_required"
            elif reason is not None:
                code, decline = "card_declined", DECLINES[reason]
            else:
                return 200, intent, 0.0
            error = {"type": "card_error", "code": code, "decline_code": decline, "message": "Your card was declined.",
                     "payment_method": stripe_object("payment_method", id=method_id, customer=params["customer"])}
            intent.update(status="requires_payment_method", amount_received=0, last_payment_error=error)
            return 402, {"error": {**error, "payment_intent": intent}}, 0.0
        if path == "/v1/payment_intents" and method == "GET":  # newest first, as Stripe lists
            data = [i for i in reversed(self.intents.values()) if i["customer"] == params.get("customer")]
            return 200, {"object": "list", "data": data[:int(params.get("limit", 10))], "has_more": False,
                         "url": "/v1/payment_intents"}, 0.0
        if path == "/v1/payment_intents/search":
            reference = re.fullmatch(r"metadata\['merchant_reference'\]:'([^']*)'", params["query"])[1]
            data = [i for i in self.intents.values() if i["metadata"].get("merchant_reference") == reference]
            return 200, {"object": "search_result", "data": data, "has_more": False, "next_page": None,
                         "url": "/v1/payment_intents/search"}, 0.0
        if path == "/v1/checkout/sessions":
            [item] = params["line_items"]
            session = stripe_object(
                "checkout.session", id=f"cs_test_stub{n:06d}", url=f"https://checkout.stripe.com/c/pay/cs_test_stub{n:06d}",
                mode=params["mode"], client_reference_id=params.get("client_reference_id"),
                metadata=params.get("metadata", {}), amount_total=int(item["price_data"]["unit_amount"]),
                amount_subtotal=int(item["price_data"]["unit_amount"]), currency=item["price_data"]["currency"],
                success_url=params["success_url"], cancel_url=params["cancel_url"], status="open",
                payment_status="unpaid", payment_intent=None)
            return 200, session, 0.0
        if path == "/v1/refunds":
            intent = self.intents.get(params["payment_intent"])
            if intent is None:
                return 400, {"error": {"type": "invalid_request_error", "code": "resource_missing",
                                       "param": "payment_intent", "message": "No such payment_intent"}}, 0.0
            left = intent["amount_received"] - self.refunded.get(intent["id"], 0)
            if int(params["amount"]) > left:
                return 400, {"error": {"type": "invalid_request_error", "param": "amount",
                                       "message": f"Refund amount is greater than unrefunded amount on charge "
                                                  f"({left})"}}, 0.0
            self.refunded[intent["id"]] = self.refunded.get(intent["id"], 0) + int(params["amount"])
            refund = stripe_object("refund", id=f"re_stub{n:06d}", amount=int(params["amount"]),
                                   currency=intent["currency"], payment_intent=intent["id"],
                                   metadata=params.get("metadata", {}), status="succeeded")
            return 200, refund, 0.0
        return 404, {"error": {"type": "invalid_request_error", "message": f"Unrecognized request URL ({path})"}}, 0.0


def serve_stub() -> tuple[StripeStub, ThreadingHTTPServer]:
    stub = StripeStub()

    class Handler(BaseHTTPRequestHandler):
        def _handle(self, method: str) -> None:
            target = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode() if length else target.query
            params = nested(parse_qsl(raw, keep_blank_values=True))
            headers = {k.lower(): v for k, v in self.headers.items()}
            stub.requests.append({"method": method, "path": target.path, "params": params, "headers": headers})
            try:
                status, body, delay = stub.answer(method, target.path, params, headers)
            except AssertionError as exc:  # a request Stripe would not accept, an answer it would not give
                status, body, delay = 400, {"error": {"type": "invalid_request_error", "message": str(exc)}}, 0.0
                stub.requests[-1]["invalid"] = str(exc)
            time.sleep(delay)
            data = json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Request-Id", f"req_stub{len(stub.requests)}")
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client timed out first

        def do_POST(self):  # noqa: N802
            self._handle("POST")

        def do_GET(self):  # noqa: N802
            self._handle("GET")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    return stub, server


@contextmanager
def running_stub() -> Iterator[StripeStub]:
    """The stub on a free loopback port for one test; afterwards, any request or answer that broke Stripe's
    specification fails the test, even one the code under test swallowed."""
    stub, server = serve_stub()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
    invalid = [r["invalid"] for r in stub.requests if "invalid" in r]
    assert not invalid, invalid
