"""``ragtrail feedback add|list``, ``ragtrail sessions list|show`` and ``ragtrail datasets from-traces``."""

from __future__ import annotations

import json
from typing import Any, Optional

import typer

from ragtrail._exceptions import ConfigError
from ragtrail.cli._common import StoreOpt, client

app = typer.Typer(help="Give and list feedback on traces (history is kept).", no_args_is_help=True)
sessions_app = typer.Typer(
    help="Sessions (conversations): their traces, tokens, cost and feedback.", no_args_is_help=True
)


def parse_value(text: str) -> Any:
    """A CLI feedback value: true/false → boolean, a number → numeric, anything else → a label."""
    low = text.strip().lower()
    if low in ("true", "yes", "up", "+1", "👍"):
        return True
    if low in ("false", "no", "down", "-1", "👎"):
        return False
    try:
        return float(text)
    except ValueError:
        return text


@app.command("add")
def add(
    trace_id: str = typer.Argument(..., help="Trace id (or a unique prefix of 8+ hex digits)."),
    name: str = typer.Argument(..., help="What is rated: thumbs, correctness, corrected_answer…"),
    value: str = typer.Argument(..., help="true/false, a number, or a label/text."),
    comment: Optional[str] = typer.Option(None, "--comment", "-c", help="Free text."),
    source: str = typer.Option("human", "--source", help="human | app | scorer."),
    by: Optional[str] = typer.Option(None, "--by", help="Who gives it (default: $USER)."),
    span: Optional[str] = typer.Option(None, "--span", help="Span id, when the feedback is about one span."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Add a feedback record to a trace (never overwrites earlier ones)."""
    import getpass

    from ragtrail.tracing._feedback import log_feedback

    c = client(store)
    tid = c.trace(trace_id).trace_id  # resolves a prefix, fails clearly on an unknown id
    target: Any = tid if span is None else (_SpanRef(tid, span))
    who = by
    if who is None:
        try:
            who = getpass.getuser()
        except Exception:  # pragma: no cover - no user name in this environment
            who = None
    fid = log_feedback(target, name, parse_value(value), comment=comment, source=source, by=who, store=c.store)
    typer.echo(f"feedback {fid} on trace {tid}")


class _SpanRef:
    def __init__(self, trace_id: str, span_id: str) -> None:
        self.trace_id = trace_id
        self.span_id = span_id.strip().lower()


@app.command("list")
def list_(
    trace_id: Optional[str] = typer.Argument(None, help="Only this trace."),
    name: Optional[str] = typer.Option(None, "--name", help="Only this feedback name."),
    source: Optional[str] = typer.Option(None, "--source", help="Only this source (human | app | scorer)."),
    limit: int = typer.Option(50, "--limit", "-n", help="Newest N records."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Feedback records, newest last (every record: history is kept)."""
    c = client(store)
    tid = c.trace(trace_id).trace_id if trace_id else None
    df = c.feedback_df(tid, name=name, source=source)
    df = df.tail(limit)
    if as_json:
        for r in df.itertuples(index=False):
            rec = r._asdict()
            rec["created_at"] = rec["created_at"].isoformat()
            typer.echo(json.dumps(rec, ensure_ascii=False, default=str))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{len(df)} feedback record(s)")
    for col in ("time (UTC)", "trace_id", "name", "value", "source", "by", "comment"):
        table.add_column(col)
    for r in df.itertuples(index=False):
        table.add_row(
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"), str(r.trace_id), escape(str(r.name)), escape(str(r.value)),
            str(r.source), escape(str(r.by or "")), escape(str(r.comment or "")),
        )  # fmt: skip
    Console(width=200).print(table)


@sessions_app.command("list")
def sessions_list(
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Only this project."),
    user: Optional[str] = typer.Option(None, "--user", help="Only this user id."),
    limit: int = typer.Option(20, "--limit", "-n", help="How many sessions (latest activity first)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Sessions: id, user, traces, first/last time, tokens, cost, feedback."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    df = client(store).sessions_df(project, user_id=user, limit=limit)
    fb_cols = [c for c in df.columns if c.startswith("feedback.")]
    table = Table(title=f"{len(df)} session(s)")
    for col in ("session_id", "user_id", "traces", "first (UTC)", "last (UTC)", "tokens in→out", "cost", *fb_cols):
        table.add_column(col)
    for r in df.to_dict("records"):
        cost = "-" if r["cost_usd"] != r["cost_usd"] else f"${r['cost_usd']:.6f}"
        tin, tout = (0 if r[c] is None or str(r[c]) == "<NA>" else int(r[c]) for c in ("input_tokens", "output_tokens"))
        table.add_row(
            escape(str(r["session_id"])), escape(str(r["user_id"] or "-")), str(r["n_traces"]),
            r["first_time"].strftime("%Y-%m-%d %H:%M:%S"), r["last_time"].strftime("%Y-%m-%d %H:%M:%S"),
            f"{tin}→{tout}", cost, *("-" if r[c] != r[c] else f"{r[c]:.3f}" for c in fb_cols),
        )  # fmt: skip
    Console(width=200).print(table)


@sessions_app.command("show")
def sessions_show(
    session_id: str = typer.Argument(..., help="Session id."),
    store: Optional[str] = StoreOpt,
) -> None:
    """The traces of a session in order, each with its input, output and feedback."""
    from rich.markup import escape

    c = client(store)
    traces = c.traces(session_id=session_id, limit=None)
    if not traces:
        raise ConfigError(f"no session {session_id!r} in the store {c.store.url}; `ragtrail sessions list` shows them")
    traces.reverse()  # oldest first: the conversation in order
    from rich.console import Console

    con = Console(width=200, highlight=False)
    users = {t.root.user_id for t in traces if t.root is not None and t.root.user_id}
    con.print(f"session {escape(session_id)}  user {escape(', '.join(sorted(users)) or '-')}  {len(traces)} trace(s)")
    for t in traces:
        root = t.root
        if root is None:
            continue
        start = root.start_time_ns / 1e9
        from datetime import datetime, timezone

        when = datetime.fromtimestamp(start, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        con.print(f"\n[{when}] {t.trace_id}  {escape(root.name)}  {t.duration_ms:.1f} ms")
        con.print(f"  in : {escape(_short(root.input))}")
        con.print(f"  out: {escape(_short(root.output))}")
        for k, v in sorted(t.feedback.items()):
            con.print(f"  feedback {escape(k)} = {escape(str(v))}")


def _short(v: Any, n: int = 160) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def from_traces(
    name: str = typer.Argument(..., help="Dataset name."),
    project: Optional[str] = typer.Option(None, "--project", "-p", help="Traces of this project."),
    filters: list[str] = typer.Option(
        [],
        "--filter",
        "-f",
        help="session_id=…, user_id=…, tag=…, since=ISO time, feedback.NAME=VALUE (repeatable; all must hold).",
    ),
    input_path: Optional[str] = typer.Option(None, "--input", help="Dotted path for the input (default: root input)."),
    output_path: Optional[str] = typer.Option(
        None, "--output", help="Dotted path for the output (default: root output)."
    ),
    reference: Optional[str] = typer.Option(
        None, "--reference", help="Dotted path for the reference, e.g. feedback.corrected_answer."
    ),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="At most N traces (newest)."),
    add: bool = typer.Option(False, "--add", help="Add to the newest stored version of NAME (next version)."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Make a dataset version from stored traces (lineage: the trace ids) and store it."""
    from ragtrail.evals._datasets import Dataset, load_dataset

    c = client(store)
    kw: dict[str, Any] = {}
    fb_want: dict[str, str] = {}
    for f in filters:
        key, sep, val = f.partition("=")
        if not sep:
            raise ConfigError(f"--filter {f!r}: expected KEY=VALUE (session_id, user_id, tag, since, feedback.NAME)")
        key = key.strip()
        if key in ("session_id", "user_id"):
            kw[key] = val
        elif key == "tag":
            kw.setdefault("tags", []).append(val)
        elif key == "since":
            from ragtrail.cli._traces import _utc

            kw["start"] = _utc(val)
        elif key.startswith("feedback."):
            fb_want[key[len("feedback.") :]] = val
        else:
            raise ConfigError(
                f"--filter {f!r}: unknown key {key!r}; use session_id, user_id, tag, since or feedback.NAME"
            )
    traces = c.traces(project, limit=limit, **kw)
    if fb_want:
        traces = [
            t
            for t in traces
            if all(name_ in t.feedback and _same(t.feedback[name_], v) for name_, v in fb_want.items())
        ]
    traces.reverse()  # oldest first: a stable order for the content hash
    mapping = {k: v for k, v in (("input", input_path), ("output", output_path), ("reference", reference)) if v}
    if add:
        ds = load_dataset(c.store, name).add_traces(traces, **mapping)
    else:
        ds = Dataset.from_traces(traces, name=name, **mapping)
    version = ds.push(c.store)
    typer.echo(f"{name}:{version}  {len(ds)} examples from {len(traces)} trace(s)")


def _same(have: Any, want: str) -> bool:
    parsed = parse_value(want)
    if isinstance(have, bool) or isinstance(parsed, bool):
        return have is parsed if isinstance(parsed, bool) else str(have) == want
    if isinstance(have, float) and isinstance(parsed, float):
        return have == parsed
    return str(have) == want


def register(root: typer.Typer) -> None:
    """Add ``feedback`` and ``sessions`` to the root app and ``from-traces`` to ``datasets``."""
    root.add_typer(app, name="feedback")
    root.add_typer(sessions_app, name="sessions")
    try:
        from ragtrail.cli._datasets import app as datasets_app
    except ModuleNotFoundError:  # pragma: no cover
        return
    datasets_app.command("from-traces")(from_traces)
