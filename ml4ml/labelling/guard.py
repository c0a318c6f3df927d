"""What keeps the labelling page's server to its own raters: Host names, origins, headers.

- ``Hosts(bound)``: the names the server answers to. Bound to a loopback address: only
  ``127.0.0.1``, ``localhost``, ``[::1]`` (and the bound address). Bound to one other
  address or name: that one. Bound to every address (``0.0.0.0``, ``::``): the machine's
  own names (``socket.gethostname()``, ``getfqdn()``), the loopback names and any IP
  literal. A request whose ``Host`` is anything else is refused (403) before it reaches
  the app. That stops DNS rebinding: a page of an attacker's domain that the attacker
  re-points at this machine sends ``Host: attacker.example``, never a name of this
  machine; an IP literal in ``Host`` means the page's own origin is that IP, which no
  other site can be. (Every route but ``/health`` also needs a rater's token, which such
  a page does not have.)
- ``write_refusal(request)``: a write must be ``Content-Type: application/json`` (which
  a cross-site form or a no-cors fetch cannot send) with ``Origin`` equal to
  ``http://`` + its ``Host`` (which a cross-site page cannot forge); else the reason.
- ``Guard``: the ASGI middleware that checks ``Host`` and adds to every answer
  ``X-Frame-Options: DENY``, the page's CSP (``frame-ancestors 'none'``),
  ``Referrer-Policy: no-referrer`` (tokens are in URLs), ``X-Content-Type-Options:
  nosniff`` and, unless the route set its own, ``Cache-Control: no-store``.
"""

from __future__ import annotations

import ipaddress
import json
import socket

__all__ = ["Hosts", "Guard", "write_refusal", "is_loopback", "WILDCARD"]

LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD = frozenset({"0.0.0.0", "::", ""})


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    host = str(host).strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ip(name: str):
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        return None


def host_name(header: str) -> str | None:
    """The name in a ``Host`` header, lower case, without port, brackets or final dot;
    None when the header is malformed."""
    header = header.strip().lower()
    if header.startswith("["):
        end = header.find("]")
        rest = header[end + 1:] if end > 0 else "x"
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return header[1:end]
    name, colon, port = header.partition(":")
    if colon and not port.isdigit():
        return None
    return name.rstrip(".") or None


class Hosts:
    """The ``Host`` names a server bound to ``bound`` answers to (see the module)."""

    def __init__(self, bound: str):
        bound = str(bound).strip("[]").lower()
        self.any_ip = bound in WILDCARD
        if self.any_ip:
            names = set(LOOPBACK_NAMES)
            for name in (socket.gethostname(), socket.getfqdn()):
                if name:
                    names.add(name.lower().rstrip("."))
        elif is_loopback(bound):
            names = set(LOOPBACK_NAMES) | {bound}
        else:
            names = {bound}
        self.names = frozenset(self._canonical(n) for n in names)

    @staticmethod
    def _canonical(name: str) -> str:
        address = _ip(name)
        return str(address) if address is not None else name

    def allows(self, header: str | None) -> bool:
        name = host_name(header or "")
        if name is None:
            return False
        if self.any_ip and _ip(name) is not None:
            return True
        return self._canonical(name) in self.names


def write_refusal(request) -> str | None:
    """Why a POST may not write (not JSON, or not from this server's own page), or None."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        return (f"refused: a write must be sent as Content-Type: application/json, not "
                f"{media or 'nothing'!r}")
    origin = request.headers.get("origin")
    own = "http://" + request.headers.get("host", "")
    if origin is None:
        return "refused: a write must come from this server's page (no Origin header)"
    if origin != own:
        return f"refused: a write must come from this server's page ({own}), not {origin!r}"
    return None


class Guard:
    """ASGI middleware: refuse a foreign ``Host``; add the security headers to every answer."""

    def __init__(self, app, hosts: Hosts, csp: str):
        self.app = app
        self.hosts = hosts
        self.headers = {"X-Frame-Options": "DENY", "Content-Security-Policy": csp,
                        "Referrer-Policy": "no-referrer", "X-Content-Type-Options": "nosniff",
                        "Cache-Control": "no-store"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers, MutableHeaders

        async def send_guarded(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in self.headers.items():
                    headers.setdefault(key, value)
            await send(message)

        host = Headers(scope=scope).get("host")
        if self.hosts.allows(host):
            return await self.app(scope, receive, send_guarded)
        body = json.dumps({"error": f"refused: Host {host!r} is not a name of this "
                                    "server"}).encode()
        await send_guarded({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
