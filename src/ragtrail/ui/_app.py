"""The FastAPI application of ``ragtrail ui``: server-rendered pages, each with its JSON twin under ``/api/``.

Safety: bound to loopback by default (and then only loopback ``Host`` headers are served, against DNS
rebinding); with a token every request needs ``Authorization: Bearer`` or the cookie the login form
sets; requests that change state need the CSRF token (double-submit cookie); every response carries a
Content-Security-Policy without inline scripts; templates autoescape and show control characters as
visible escapes.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import secrets
from datetime import datetime, timezone
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from markupsafe import Markup, escape
from starlette.staticfiles import StaticFiles

from ragtrail._exceptions import ConfigError, RagtrailError
from ragtrail.store import Store, open_store
from ragtrail.ui import _data, _svg

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
_TOKEN_COOKIE = "ragtrail_ui_token"  # noqa: S105 - a cookie name, not a secret
_CSRF_COOKIE = "ragtrail_csrf"
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'self' http://127.0.0.1:* http://localhost:*"
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_PUBLIC_PATHS = ("/login", "/static/")


def _visible(text: str) -> str:
    """Control and bidi-override characters as visible ``\\xNN`` / ``\\uNNNN`` escapes."""
    return _CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


def _finalize(v: Any) -> Any:
    if isinstance(v, str) and not hasattr(v, "__html__"):
        return _visible(v)
    return "" if v is None else v


def _json_for_script(obj: Any) -> str:
    """JSON safe inside ``<script type="application/json">`` (no ``</script>``, no HTML-significant chars)."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    return (
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )  # fmt: skip


def _fmt_ms(v: Any) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    return f"{v:.1f} ms" if v >= 1 else f"{v:.2f} ms"


def _fmt_cost(v: Any) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"${v:.2e}" if 0 < abs(v) < 1e-3 else f"${v:.4f}"


def _fmt_num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _fmt_signed(v: Any) -> str:
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "–"
    return f"{v:+.4g}"


def _fmt_time(ns: Any) -> str:
    if not isinstance(ns, (int, float)):
        return "–"
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _fmt_day(ns: Any) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d")


def _fmt_epoch(s: Any) -> str:
    if not isinstance(s, (int, float)):
        return "–"
    return datetime.fromtimestamp(s, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def _short(v: Any, n: int = 160) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    return text if len(text) <= n else text[: n - 1] + "…"


def _templates() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("ragtrail.ui").joinpath("templates"))),
        autoescape=True,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        ms=_fmt_ms, cost=_fmt_cost, num=_fmt_num, signed=_fmt_signed, time=_fmt_time, day=_fmt_day,
        epoch=_fmt_epoch, short=_short, q=lambda s: quote(str(s), safe=""), tojson_script=_json_for_script,
    )  # fmt: skip
    env.globals.update(forest=_svg.forest, series=_svg.series, bars=_svg.bars, isinstance=isinstance, dict=dict,
                       list=list, str=str, json_dumps=lambda v: json.dumps(v, ensure_ascii=False, indent=2, default=str))  # fmt: skip
    return env


def create_app(
    store: str | Store | None = None,
    *,
    token: str | None = None,
    allowed_hosts: set[str] | frozenset[str] | None = LOOPBACK_HOSTS,
    title: str = "ragtrail",
) -> FastAPI:
    """The UI application over ``store`` (a Store, a path or URL; None: the default store).

    Args:
        token: when set, every request needs it (``Authorization: Bearer`` or the login form's cookie).
        allowed_hosts: ``Host`` header names served (loopback by default; None serves any host, for a
            non-loopback bind, which then must have a token).
    """
    st = store if isinstance(store, Store) else open_store(store)
    env = _templates()
    qrels = _data.Qrels(st)
    app = FastAPI(title="ragtrail ui", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store = st
    app.mount("/static", StaticFiles(directory=str(resources.files("ragtrail.ui").joinpath("static"))), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        host = _host_name(request.headers.get("host") or "")
        if allowed_hosts is not None and host not in allowed_hosts:
            return _secure(Response(f"host {host!r} is not served (loopback only)", 421, media_type="text/plain"))
        root = request.scope.get("root_path", "") or ""
        path = request.url.path
        if root and path.startswith(root):
            path = path[len(root) :]
        request.state.csrf = request.cookies.get(_CSRF_COOKIE) or secrets.token_urlsafe(24)
        if token is not None and not any(path.startswith(p) for p in _PUBLIC_PATHS):
            if not _authorized(request, token):
                if path.startswith("/api/"):
                    resp: Response = JSONResponse({"error": "unauthorized: send Authorization: Bearer TOKEN"}, 401,
                                                  headers={"WWW-Authenticate": 'Bearer realm="ragtrail"'})  # fmt: skip
                else:
                    base = request.scope.get("root_path", "")
                    resp = RedirectResponse(f"{base}/login?next={quote(path, safe='/')}", 303)
                return _secure(resp)
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            body = await request.body()
            sent = request.headers.get("x-csrf-token") or parse_qs(body.decode("utf-8", "replace")).get("csrf", [""])[0]
            cookie = request.cookies.get(_CSRF_COOKIE) or ""
            if not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
                return _secure(Response("missing or wrong CSRF token; reload the page and try again", 403,
                                        media_type="text/plain"))  # fmt: skip
            request.state.form = parse_qs(body.decode("utf-8", "replace"))
        resp = await call_next(request)
        if _CSRF_COOKIE not in request.cookies:
            resp.set_cookie(_CSRF_COOKIE, request.state.csrf, httponly=True, samesite="strict", path="/")
        return _secure(resp)

    def page(request: Request, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        base = request.scope.get("root_path", "")

        def url(path: str, **params: Any) -> str:
            clean = {k: v for k, v in params.items() if v not in (None, "")}
            return base + path + (("?" + urlencode(clean)) if clean else "")

        path = request.url.path[len(base) :] if base and request.url.path.startswith(base) else request.url.path
        html = env.get_template(name).render(
            request=request, base=base, url=url, path=path, csrf=request.state.csrf, title=title, store_url=st.url,
            args=dict(request.query_params), **ctx,
        )  # fmt: skip
        return HTMLResponse(html, status)

    def fail(request: Request, exc: Exception, api: bool) -> Response:
        status = 404 if isinstance(exc, _data.NotFound) else 400 if isinstance(exc, ConfigError) else 500
        if api:
            return JSONResponse({"error": str(exc)}, status)
        return page(request, "error.html", status, message=str(exc), code=status)

    def params(request: Request) -> dict[str, str]:
        return dict(request.query_params.items())

    # ------------------------------------------------------------------------------------ routes
    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        return RedirectResponse(request.scope.get("root_path", "") + "/traces", 307)

    def traces_data(request: Request) -> dict[str, Any]:
        data = _data.trace_list(st, params(request))
        return data

    @app.get("/api/traces")
    def api_traces(request: Request) -> Response:
        try:
            return _json_response(traces_data(request))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/traces")
    def traces(request: Request) -> Response:
        try:
            data = traces_data(request)
            from ragtrail.store import _queries as q

            return page(request, "traces.html", data=data, projects=q.projects(st), sorts=list(q.TRACE_SORTS),
                        kinds=_kinds())  # fmt: skip
        except RagtrailError as exc:
            return fail(request, exc, False)

    @app.get("/api/traces/{trace_id}")
    def api_trace(request: Request, trace_id: str) -> Response:
        try:
            tr = _data.load_trace(st, trace_id)
            data = _data.trace_view(st, tr)
            sid = request.query_params.get("span")
            if sid:
                data["span"] = _data.span_view(st, tr, sid, qrels)
            return _json_response(data)
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/traces/{trace_id}")
    def trace(request: Request, trace_id: str) -> Response:
        try:
            tr = _data.load_trace(st, trace_id)
            data = _data.trace_view(st, tr)
            sid = request.query_params.get("span") or (tr.root.span_id if tr.root else None)
            span = _data.span_view(st, tr, sid, qrels) if sid else None
            selected = span["span_id"] if span else None
            spans = data["spans"]
            # long traces: the first rows as HTML, the rest as data the page's script appends after the
            # first paint (?all=1 renders every row, for reading without JavaScript)
            cut = (
                len(spans) if request.query_params.get("all") == "1" or len(spans) <= FIRST_ROWS * 1.25 else FIRST_ROWS
            )
            rest = [[r["span_id"], r["name"], _kind_class(r["kind"]), min(int(r["depth"]), 20), int(r["status"] == "ERROR")]
                    for r in spans[cut:]]  # fmt: skip
            script_data = {"trace_id": data["trace_id"], "duration_ms": data["duration_ms"], "selected": selected,
                           "bars": [[r["span_id"], r["start_ms"], r["duration_ms"]] for r in spans], "rest": rest}  # fmt: skip
            return page(request, "trace.html", data=data, span=span, rows=_tree_rows(spans[:cut], selected),
                        n_shown=cut, script_data=script_data)  # fmt: skip
        except RagtrailError as exc:
            return fail(request, exc, False)

    @app.get("/api/traces/{trace_id}/spans/{span_id}")
    def api_span(request: Request, trace_id: str, span_id: str) -> Response:
        try:
            tr = _data.load_trace(st, trace_id)
            return _json_response(_data.span_view(st, tr, span_id, qrels))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/traces/{trace_id}/spans/{span_id}")
    def span_fragment(request: Request, trace_id: str, span_id: str) -> Response:
        """The span panel alone (the trace page swaps it in on click)."""
        try:
            tr = _data.load_trace(st, trace_id)
            return page(request, "span_panel.html", span=_data.span_view(st, tr, span_id, qrels))
        except RagtrailError as exc:
            return fail(request, exc, False)

    @app.get("/api/runs")
    def api_runs(request: Request) -> Response:
        try:
            return _json_response(_data.runs_view(st))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/runs")
    def runs(request: Request) -> Response:
        try:
            return page(request, "runs.html", data=_data.runs_view(st))
        except RagtrailError as exc:
            return fail(request, exc, False)

    @app.get("/api/runs/{ref}")
    def api_run(request: Request, ref: str) -> Response:
        try:
            return _json_response(_data.run_view(st, ref, params(request)))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/runs/{ref}")
    def run(request: Request, ref: str) -> Response:
        try:
            return page(request, "run.html", data=_data.run_view(st, ref, params(request)))
        except RagtrailError as exc:
            return fail(request, exc, False)

    def compare_args(request: Request) -> tuple[str, str]:
        a, b = request.query_params.get("a", ""), request.query_params.get("b", "")
        if not a or not b:
            raise ConfigError("compare needs two runs: ?a=name:v1&b=name:v2")
        return a, b

    @app.get("/api/compare")
    def api_compare(request: Request) -> Response:
        try:
            return _json_response(_data.compare_view(st, *compare_args(request)))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/compare")
    def compare(request: Request) -> Response:
        try:
            if not request.query_params.get("a") or not request.query_params.get("b"):
                return page(request, "compare_pick.html", data=_data.runs_view(st))
            return page(request, "compare.html", data=_data.compare_view(st, *compare_args(request)))
        except RagtrailError as exc:
            return fail(request, exc, False)

    def diff_args(request: Request) -> tuple[str, str, str]:
        a, b = compare_args(request)
        ex = request.query_params.get("example", "")
        if not ex:
            raise ConfigError("a trace diff needs an example: ?a=…&b=…&example=ID")
        return a, b, ex

    @app.get("/api/compare/diff")
    def api_diff(request: Request) -> Response:
        try:
            return _json_response(_data.trace_diff(st, *diff_args(request)))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/compare/diff")
    def diff(request: Request) -> Response:
        try:
            return page(request, "diff.html", data=_data.trace_diff(st, *diff_args(request)))
        except RagtrailError as exc:
            return fail(request, exc, False)

    @app.get("/api/datasets")
    def api_datasets(request: Request) -> Response:
        try:
            return _json_response(_data.datasets_view(st))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/datasets")
    def datasets(request: Request) -> Response:
        try:
            return page(request, "datasets.html", data=_data.datasets_view(st))
        except RagtrailError as exc:
            return fail(request, exc, False)

    @app.get("/api/datasets/{name}")
    def api_dataset(request: Request, name: str) -> Response:
        try:
            return _json_response(_data.dataset_view(st, name, params(request)))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/datasets/{name}")
    def dataset(request: Request, name: str) -> Response:
        try:
            return page(request, "dataset.html", data=_data.dataset_view(st, name, params(request)))
        except RagtrailError as exc:
            return fail(request, exc, False)

    @app.get("/api/overview")
    def api_overview(request: Request) -> Response:
        try:
            return _json_response(_data.overview_view(st, params(request)))
        except RagtrailError as exc:
            return fail(request, exc, True)

    @app.get("/overview")
    def overview(request: Request) -> Response:
        try:
            from ragtrail.store import _queries as q

            return page(
                request, "overview.html", data=_data.overview_view(st, params(request)), projects=q.projects(st)
            )
        except RagtrailError as exc:
            return fail(request, exc, False)

    @app.get("/login")
    def login_form(request: Request) -> Response:
        return page(request, "login.html", next=_safe_next(request.query_params.get("next")), error=None)

    @app.post("/login")
    def login(request: Request) -> Response:
        form = getattr(request.state, "form", {})
        sent = (form.get("token") or [""])[0]
        nxt = _safe_next((form.get("next") or [""])[0])
        if token is None or not hmac.compare_digest(sent.encode(), token.encode()):
            return page(request, "login.html", 401, next=nxt, error="wrong token")
        base = request.scope.get("root_path", "")
        resp = RedirectResponse(base + nxt, 303)
        resp.set_cookie(_TOKEN_COOKIE, token, httponly=True, samesite="strict", path="/")
        return resp

    @app.post("/logout")
    def logout(request: Request) -> Response:
        resp = RedirectResponse(request.scope.get("root_path", "") + "/login", 303)
        resp.delete_cookie(_TOKEN_COOKIE, path="/")
        return resp

    return app


_KINDS = frozenset({"LLM", "EMBEDDING", "RETRIEVER", "RERANKER", "CHAIN", "TOOL", "AGENT", "EVALUATOR"})
FIRST_ROWS = 400
"""Span rows of a trace page rendered as HTML before the script appends the rest."""


def _kind_class(kind: Any) -> str:
    return kind if kind in _KINDS else "OTHER"


def _tree_rows(spans: list[dict[str, Any]], selected: str | None) -> Markup:
    """The span tree / waterfall rows, built here rather than in Jinja: a 5,000-span trace renders in
    tens of milliseconds instead of most of a second. Every stored text goes through escape()."""
    out = []
    for s in spans:
        sid = escape(s["span_id"])
        kind = s["kind"] if s["kind"] in _KINDS else "OTHER"
        cls = (
            f"wf-row w-{kind}"
            + (" sel" if s["span_id"] == selected else "")
            + (" err" if s["status"] == "ERROR" else "")
        )
        out.append(
            f'<a class="{cls}" id="row-{sid}" href="?span={quote(s["span_id"], safe="")}">'
            f'<span class="wf-name d{min(int(s["depth"]), 20)}">{escape(_visible(str(s["name"])))}</span>'
            '<span class="bar"></span></a>'
        )
    return Markup("\n".join(out))  # noqa: S704 - every value above is escaped


def _safe_next(nxt: str | None) -> str:
    """Only a local path (never ``//host`` or ``javascript:``) as the page to return to after login."""
    if not nxt or not nxt.startswith("/") or nxt.startswith("//") or "\\" in nxt:
        return "/traces"
    return nxt


def _host_name(header: str) -> str:
    """The host name of a ``Host`` header, without its port (``[::1]:8080`` → ``[::1]``)."""
    if header.startswith("["):
        return header.split("]", 1)[0] + "]"
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _authorized(request: Request, token: str) -> bool:
    header = request.headers.get("authorization") or ""
    if header[:7].lower() == "bearer " and hmac.compare_digest(header[7:].strip().encode(), token.encode()):
        return True
    cookie = request.cookies.get(_TOKEN_COOKIE) or ""
    return bool(cookie) and hmac.compare_digest(cookie.encode(), token.encode())


def _secure(resp: Response) -> Response:
    resp.headers["Content-Security-Policy"] = _CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Referrer-Policy"] = "no-referrer"
    resp.headers.setdefault("Cache-Control", "no-store")
    return resp


def _kinds() -> list[str]:
    from ragtrail import semconv

    return list(semconv.SPAN_KINDS)


def _json_response(data: Any) -> Response:
    """orjson: NaN and infinities become null, and a 5,000-span trace serialises in milliseconds."""
    import orjson

    try:
        body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # e.g. an integer beyond 64 bits in stored attributes
        body = json.dumps(_clean(data), default=str).encode()
    return Response(body, media_type="application/json")


def _clean(obj: Any) -> Any:
    """JSON-ready: NaN/inf as null, sets as lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_clean(v) for v in obj]
    return obj
