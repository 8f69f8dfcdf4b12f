"""Imported first by ``ragtrail.server``: without the ``otlp`` extra, one line naming the command to run."""

from ragtrail._deps import require

for _module in ("fastapi", "uvicorn", "grpc", "opentelemetry.proto"):
    require(_module, extra="otlp", feature="the OTLP receiver (ragtrail serve)")
