"""Start the UI: in the foreground (``ragtrail ui``) or in a background thread (notebooks)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from ragtrail._exceptions import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6007


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_app(store: Any = None, *, host: str = DEFAULT_HOST, token: str | None = None) -> Any:
    """The UI app for a bind address: loopback serves loopback Host names only; any other address
    needs ``token`` (a ConfigError otherwise) and serves any Host name."""
    from ragtrail.ui import create_app
    from ragtrail.ui._app import LOOPBACK_HOSTS

    if is_loopback(host):
        return create_app(store, token=token, allowed_hosts=LOOPBACK_HOSTS)
    if not token:
        raise ConfigError(
            f"the UI would listen on {host}, beyond this machine, without a token; pass --token "
            "(or set RAGTRAIL_UI_TOKEN), or keep the default --host 127.0.0.1"
        )
    return create_app(store, token=token, allowed_hosts=None)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; pick another --port") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


@dataclass
class UI:
    """A running UI: ``url``, ``stop()``; ``url_for(obj)`` gives the page of a trace, span, run or comparison."""

    url: str
    host: str
    port: int
    _server: Any = field(repr=False, default=None)
    _thread: threading.Thread | None = field(repr=False, default=None)

    def stop(self, timeout_s: float = 5.0) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)

    def url_for(self, obj: Any) -> str:
        return self.url + url_for(obj)

    def _repr_html_(self) -> str:
        import html

        return f'ragtrail ui at <a href="{html.escape(self.url)}" target="_blank">{html.escape(self.url)}</a>'


def _server(app: Any, log_level: str = "warning") -> Any:
    import uvicorn

    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="off")
    return uvicorn.Server(config)


def serve(
    store: Any = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None,
    on_ready: Any = None,
) -> None:  # fmt: skip
    """Serve the UI in the foreground until interrupted (``ragtrail ui``)."""
    app = build_app(store, host=host, token=token)
    sock = _bind(host, port)
    server = _server(app)
    if on_ready is not None:
        on_ready(sock.getsockname()[1])
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        sock.close()


_current: UI | None = None
_lock = threading.Lock()


def start(store: Any = None, *, host: str = DEFAULT_HOST, port: int = 0, token: str | None = None) -> UI:
    """Start a UI server in a background thread (port 0: a free one) and return it once it listens."""
    import time

    app = build_app(store, host=host, token=token)
    sock = _bind(host, port)
    server = _server(app)
    real_port = sock.getsockname()[1]

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        finally:
            sock.close()

    th = threading.Thread(target=run, name="ragtrail-ui", daemon=True)
    th.start()
    deadline = time.monotonic() + 10
    while not server.started and th.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    shown = f"[{host}]" if ":" in host else host
    return UI(f"http://{shown}:{real_port}", host, real_port, server, th)


def launch(store: Any = None, *, host: str = DEFAULT_HOST, port: int = 0, token: str | None = None) -> UI:
    """Start the UI in a background thread for a notebook and return it (``ui.url``, ``ui.stop()``);
    while it runs, later calls return the same one. The store defaults to that of ``ragtrail.init()``."""
    global _current
    with _lock:
        if _current is not None and _current._thread is not None and _current._thread.is_alive():
            return _current
        if store is None:
            from ragtrail.tracing._setup import get_config

            cfg = get_config()
            if cfg is not None and cfg.store is not None:
                store = cfg.store
        _current = start(store, host=host, port=port, token=token)
        return _current


def url_for(obj: Any) -> str:
    """The path of ``obj``'s page: a Trace, SpanRecord, Run, Comparison, trace id or run reference."""
    from ragtrail.tracing._model import SpanRecord, Trace

    if isinstance(obj, Trace):
        return f"/traces/{quote(obj.trace_id, safe='')}"
    if isinstance(obj, SpanRecord):
        return f"/traces/{quote(obj.trace_id, safe='')}?{urlencode({'span': obj.span_id})}"
    a, b = getattr(obj, "a", None), getattr(obj, "b", None)
    if a is not None and b is not None and hasattr(a, "ref") and hasattr(b, "ref"):
        return "/compare?" + urlencode({"a": a.ref, "b": b.ref})
    if hasattr(obj, "ref") and hasattr(obj, "run_id"):
        return f"/runs/{quote(obj.ref, safe='')}"
    if isinstance(obj, str):
        text = obj.strip()
        if len(text) >= 8 and all(c in "0123456789abcdef" for c in text.lower()):
            return f"/traces/{quote(text, safe='')}"
        return f"/runs/{quote(text, safe='')}"
    raise ConfigError(f"cannot show a {type(obj).__name__}; pass a Trace, span, Run, Comparison, trace id or run ref")


def show(obj: Any = None, *, height: int = 720, store: Any = None) -> Any:
    """Display ``obj``'s page inline in a notebook (an IFrame), launching the UI first if needed.
    Without ``obj``: the trace list."""
    ui = launch(store)
    target = ui.url + (url_for(obj) if obj is not None else "/traces")
    try:
        from IPython.display import IFrame
    except ImportError:  # outside IPython: the address is still useful
        return target
    return IFrame(target, width="100%", height=height)
