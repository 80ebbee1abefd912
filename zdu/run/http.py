"""HTTP requests of ``http:`` steps, made from the control machine.

No proxy from the environment unless the step asks (a health or admin call must reach the node
itself); TLS verified by default, with the step's CA file and client certificate; basic auth
from the step's (secret) credentials.  :func:`http_request` never raises: refused, timed out,
TLS failure, a port that does not speak HTTP -- each is an ``error`` saying why.
"""
from __future__ import annotations

import base64
import re
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable

from ..planning.plan import PlannedRequest

#: at most this much of a response body is read
BODY_LIMIT = 1 << 20


@dataclass(frozen=True)
class Answer:
    status: int = 0
    body: str = ""
    error: str = ""


def http_request(request: PlannedRequest) -> Answer:
    """Make ``request``; the answer, or why there is none."""
    handlers: list[urllib.request.BaseHandler] = []
    if not request.proxy:
        handlers.append(urllib.request.ProxyHandler({}))
    if request.url.startswith("https:"):
        try:
            context = ssl.create_default_context(cafile=request.ca_file) if request.verify \
                else ssl._create_unverified_context()  # noqa: S323 - the profile asked for verify: false
            if request.client_cert:
                context.load_cert_chain(request.client_cert, request.client_key)
        except (OSError, ssl.SSLError, ValueError) as exc:
            return Answer(error=f"TLS settings: {type(exc).__name__}: {exc}")
        handlers.append(urllib.request.HTTPSHandler(context=context))
    opener = urllib.request.build_opener(*handlers)
    headers = dict(request.headers)
    if request.user is not None:
        token = base64.b64encode(f"{request.user}:{request.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    prepared = urllib.request.Request(request.url, data=request.body, headers=headers, method=request.method)
    try:
        with opener.open(prepared, timeout=request.timeout) as response:  # noqa: S310 - URL from the profile
            return Answer(response.status, response.read(BODY_LIMIT).decode("utf-8", "replace"))
    except urllib.error.HTTPError as exc:
        try:
            body = exc.read(BODY_LIMIT).decode("utf-8", "replace") if exc.fp else ""
        except Exception:  # noqa: BLE001 - the status is what counts
            body = ""
        return Answer(exc.code, body)
    except urllib.error.URLError as exc:
        return Answer(error=_reason(exc.reason))
    except Exception as exc:  # noqa: BLE001 - BadStatusLine, InvalidURL, reset, timeout ...
        return Answer(error=_reason(exc))


def judge_response(request: PlannedRequest, status: int, body: str,
                   mask: Callable[[str], str] = lambda text: text) -> str | None:
    """None when the answer is what the step expects, else why not (quoting the body masked
    before it is cut: a cut through a secret would leave a piece the masker cannot know)."""
    expected = "/".join(str(s) for s in request.status)
    if status not in request.status:
        snippet = " ".join(mask(body).split())[:160]
        return f"{request.method} {request.url}: status {status}, expected {expected}" + \
            (f": {snippet!r}" if snippet else "")
    if request.match and not re.search(request.match, body):
        return f"{request.method} {request.url}: status {status}, body does not match /{request.match}/"
    return None


def _reason(exc: object) -> str:
    if isinstance(exc, BaseException):
        text = str(exc).strip()
        return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
    return str(exc)[:200]
