"""``ragtrail ui``: serve the web UI over a store in the foreground."""

from __future__ import annotations

from typing import Optional

import typer

from ragtrail.cli._common import StoreOpt


def register(app: typer.Typer) -> None:
    """Add the ``ui`` command to the CLI."""

    @app.command("ui")
    def ui(
        store: Optional[str] = StoreOpt,
        host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind (loopback by default)."),
        port: int = typer.Option(6007, "--port", help="Port to listen on (0: any free port)."),
        token: Optional[str] = typer.Option(
            None,
            "--token",
            envvar="RAGTRAIL_UI_TOKEN",
            help="Token required beyond loopback (Authorization: Bearer, or the login form). Also $RAGTRAIL_UI_TOKEN.",
        ),
        open_browser: bool = typer.Option(False, "--open", help="Open the trace list in a browser."),
    ) -> None:
        """Browse traces, runs, comparisons and datasets of a store in a web browser (Ctrl-C to stop)."""
        from ragtrail._deps import require

        require("fastapi", extra="ui")
        require("jinja2", extra="ui")
        require("uvicorn", extra="ui")
        from ragtrail.store import open_store
        from ragtrail.ui._launch import serve

        st = open_store(store)
        shown = f"[{host}]" if ":" in host else host

        def ready(real_port: int) -> None:
            url = f"http://{shown}:{real_port}/traces"
            typer.echo(f"ragtrail ui: {url}  (store {st.url}; Ctrl-C to stop)")
            if open_browser:
                import webbrowser

                webbrowser.open(url)

        try:
            serve(st, host=host, port=port, token=token, on_ready=ready)
        except KeyboardInterrupt:  # pragma: no cover - interactive
            pass
