"""The port `rag-app serve` will bind: free, or taken (by whom, if it is a rag_app)."""

from __future__ import annotations

import errno
import socket

import httpx

from rag_app.doctor.common import CheckResult, ok, problem, warning
from rag_app.settings import Settings

COMPONENT = "server port"
# Asking a taken port whether it is a rag_app costs at most this long (a silent listener).
_HEALTH_PROBE_SECONDS = 1.0


def check_server_port(settings: Settings, timeout: float) -> CheckResult:
    host, port = settings.server.host, settings.server.port
    where = f"{host}:{port}"
    change = "set RAG_SERVER__PORT (or `rag-app serve --port`) to a free port"
    try:
        _try_bind(host, port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            if _is_rag_app(host, port, min(timeout, _HEALTH_PROBE_SECONDS)):
                return warning(
                    COMPONENT,
                    f"{where} is taken by a running rag_app server (its /health answers)",
                    "nothing to do if that is this deployment's server; otherwise stop it, or "
                    + change,
                )
            return problem(
                COMPONENT,
                f"the port {port} on {host} is taken by another program",
                f"stop that program, or {change}",
            )
        if exc.errno == errno.EACCES:
            return problem(
                COMPONENT,
                f"binding {where} is not permitted ({exc.strerror})",
                f"{change} above 1023, or grant this user the right to bind low ports",
            )
        if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
            return problem(
                COMPONENT,
                f"{host} is not an address of this machine ({exc.strerror})",
                "set RAG_SERVER__HOST to 127.0.0.1, 0.0.0.0 or one of this machine's addresses",
            )
        return problem(COMPONENT, f"{where} cannot be bound: {exc}", change)
    return ok(COMPONENT, f"{where} is free")


def _try_bind(host: str, port: int) -> None:
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        # As uvicorn binds: a port whose last connections linger in TIME_WAIT counts as free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)


def _is_rag_app(host: str, port: int, timeout: float) -> bool:
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    if ":" in shown:
        shown = f"[{shown}]"
    try:
        # trust_env=False: a proxy from the environment must not answer for a local port.
        answer = httpx.get(f"http://{shown}:{port}/health", timeout=timeout, trust_env=False)
        body = answer.json()
    except (httpx.HTTPError, ValueError):
        return False
    return isinstance(body, dict) and body.get("status") == "ok"
