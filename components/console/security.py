"""Cross-site request protection for the console's unsafe requests (approve, reject), in three layers,
each enough on its own against a form posted from another site:

1. Fetch metadata: a browser's ``Sec-Fetch-Site`` must be ``same-origin`` (or ``none``: typed by the user).
2. ``Origin``, when sent, must be this console's own origin (scheme + the Host header, which
   TrustedHostMiddleware has limited to this machine's names, so a DNS-rebound name is refused earlier).
3. A per-session token (double submit): a random value in a ``SameSite=Strict``, ``HttpOnly`` cookie, which
   every form repeats in a hidden field; the two must be equal. Another site can neither read the cookie
   nor make the browser send it.

Plus headers that keep other sites from framing the pages, and a Content-Security-Policy with no script
at all (the console has none)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from fastapi import Request
from fastapi.responses import Response

CSRF_COOKIE: Final = "ecomrec_console_csrf"
CSRF_FIELD: Final = "csrf_token"
ALLOWED_FETCH_SITES: Final = frozenset({"same-origin", "none"})
# Pages: own stylesheet, images from the console or inline (report plots), forms only to the console.
PAGE_CSP: Final = ("default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
                   "frame-ancestors 'none'; base-uri 'none'")
# report.html (written by the evaluation step) styles itself inline; still no script.
REPORT_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"


class CsrfError(Exception):
    """An unsafe request failed a cross-site check; the message says which."""


def check_unsafe_request(request: Request, form: Mapping[str, str]) -> None:
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ALLOWED_FETCH_SITES:
        raise CsrfError(f"refused: the request came from another site (Sec-Fetch-Site: {site})")
    origin = request.headers.get("origin")
    if origin is not None:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            raise CsrfError(f"refused: the request came from {origin!r}, not from this console ({own})")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = form.get(CSRF_FIELD, "")
    if not cookie or not sent or not hmac.compare_digest(cookie.encode(), sent.encode()):
        raise CsrfError("refused: the form's session token is missing or does not match this browser's; "
                        "reload the page and try again")


async def session_and_headers(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
    """Give every browser session its token (request.state.csrf_token, for the forms) and every answer
    the security headers."""
    token = request.cookies.get(CSRF_COOKIE, "")
    fresh = not token or len(token) > 128
    if fresh:
        token = secrets.token_urlsafe(32)
    request.state.csrf_token = token
    response = await call_next(request)
    if fresh:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
    response.headers.setdefault("content-security-policy", PAGE_CSP)
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["x-frame-options"] = "DENY"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["cache-control"] = "no-store"  # statuses change: never show a stale one
    return response
