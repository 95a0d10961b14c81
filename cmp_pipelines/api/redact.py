"""What the API writes to its logs about a request target: never a key or a card number.

Clients put secrets where they do not belong: `GET /v1/payments?api_key=cmp_...`, a key pasted as a path
segment, a card number typed into an account-number path. uvicorn's access log writes the target whole, so the
target is rewritten before it is logged:
- a query value is kept only for the API's own harmless parameters (`status`, `limit`, `wsdl`) and only when
  short and free of card numbers; every other value is replaced, whatever its name;
- a path segment (or query name) holding a card number is masked; one that looks like a key (our `cmp_` keys,
  or 20+ characters that are none of the API's own identifiers) is replaced.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote

from cmp_pipelines.core.cards import find_pan, mask_pans_in

REDACTED = "[redacted]"
_SHOWN_PARAMETERS = frozenset({"status", "limit", "wsdl"})
_SHOWN_VALUE = re.compile(r"[A-Za-z0-9_]{0,19}")
# The API's own path identifiers, which are not secrets: payment and set-up request ids, hosted-page sessions,
# account numbers, route words.
_OWN_IDENTIFIER = re.compile(r"(?:PAY|SR)-[0-9]{8}-[0-9A-F]{12}|hs_[0-9a-f]{24}|[A-Z0-9]{1,20}|[a-z0-9.-]{1,19}")
_KEY_LIKE = re.compile(r"cmp_.*|.{20,}", re.DOTALL)


def _part(text: str) -> str:
    decoded = unquote(text)
    if find_pan(decoded):
        return mask_pans_in(decoded) or REDACTED
    if _KEY_LIKE.fullmatch(decoded) and not _OWN_IDENTIFIER.fullmatch(decoded):
        return REDACTED
    return text


def redact_target(target: str) -> str:
    """A request path with its query, as the access log may show it."""
    path, mark, query = target.partition("?")
    shown_path = "/".join(_part(segment) for segment in path.split("/"))
    if not mark:
        return shown_path
    pairs = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        shown_name = _part(name)
        if not equals:
            pairs.append(shown_name)
        elif name in _SHOWN_PARAMETERS and _SHOWN_VALUE.fullmatch(unquote(value)) and not find_pan(unquote(value)):
            pairs.append(f"{name}={value}")
        else:
            pairs.append(f"{shown_name}={REDACTED}")
    return f"{shown_path}?{'&'.join(pairs)}"


class MaskSecrets(logging.Filter):
    """On uvicorn's access logger: the request target (the third argument of its
    `'%s - "%s %s HTTP/%s" %d'` record) is redacted, and every other string has card numbers masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            args = list(record.args)
            if record.name == "uvicorn.access" and len(args) == 5 and isinstance(args[2], str):
                args[2] = redact_target(args[2])
            record.args = tuple(mask_pans_in(a) if isinstance(a, str) else a for a in args)
        if isinstance(record.msg, str):
            record.msg = mask_pans_in(record.msg)
        return True
