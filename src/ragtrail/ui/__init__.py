"""``ragtrail ui``: a local web app over any ragtrail store (traces, runs, comparisons, datasets).

Needs the ``ui`` extra (``pip install 'ragtrail[ui]'``: FastAPI, uvicorn, Jinja2). In a notebook::

    ui = ragtrail.ui.launch()           # starts it in the background; ui.url
    ragtrail.ui.show(trace)             # that trace's page inline (an IFrame); also a Run or a trace id
"""

from __future__ import annotations

from ragtrail.ui._launch import UI, launch, show, start, url_for

__all__ = ["UI", "create_app", "launch", "show", "start", "url_for"]


def create_app(*args, **kwargs):  # type: ignore[no-untyped-def]
    """The FastAPI application (see :func:`ragtrail.ui._app.create_app`)."""
    from ragtrail._deps import require

    require("fastapi", extra="ui")
    require("jinja2", extra="ui")
    from ragtrail.ui._app import create_app as _create

    return _create(*args, **kwargs)
