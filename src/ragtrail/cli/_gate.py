"""``ragtrail gate RUN --gates gates.yaml``: exit 0 when every gate passes, 1 when one fails, 2 on an
error (bad gate file, unknown metric or run, missing baseline…). Writes JUnit XML and Markdown for CI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from ragtrail.cli._common import StoreOpt

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def gate_options_to_extra(
    gate: list[str] | None,
    non_inferior: list[str] | None,
    max_error_rate: float | None,
    max_undefined_rate: float | None,
    max_cost: float | None,
    max_p95_latency_ms: float | None,
) -> list[Any]:
    """Gates given as flags, in the gate file's syntax."""
    from ragtrail._exceptions import ConfigError

    extra: list[Any] = list(gate or [])
    for item in non_inferior or []:
        metric, sep, margin = item.rpartition(":")
        if not sep or not metric:
            raise ConfigError(f"--non-inferior {item!r}: write METRIC:MARGIN such as token_f1:0.02")
        extra.append({"metric": metric, "non_inferior": margin})
    if max_error_rate is not None:
        extra.append({"max_error_rate": max_error_rate})
    if max_undefined_rate is not None:
        extra.append({"max_undefined_rate": max_undefined_rate})
    if max_cost is not None:
        extra.append({"max_cost_usd": max_cost})
    if max_p95_latency_ms is not None:
        extra.append({"max_p95_latency_ms": max_p95_latency_ms})
    return extra


def _write(path: str | None, text: str) -> None:
    if path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")


def gate_cmd(
    run: str = typer.Argument(..., help="The run to check: name:vN, name:alias, name:latest or a run id."),
    gates: Optional[str] = typer.Option(None, "--gates", "-g", help="Gate file (YAML)."),
    gate: Optional[list[str]] = typer.Option(
        None, "--gate", help="A gate such as 'faithfulness >= 0.85' (repeatable)."
    ),
    baseline: Optional[str] = typer.Option(
        None, "--baseline", "-b", help="Baseline for non-inferiority gates (alias such as production, or a run)."
    ),
    non_inferior: Optional[list[str]] = typer.Option(
        None,
        "--non-inferior",
        help="METRIC:MARGIN: CI lower bound of (run − baseline) must exceed −MARGIN (repeatable).",
    ),
    max_error_rate: Optional[float] = typer.Option(
        None, "--max-error-rate", help="Maximum share of examples with a pipeline or scorer error."
    ),
    max_undefined_rate: Optional[float] = typer.Option(
        None, "--max-undefined-rate", help="Maximum share of examples with an undefined score."
    ),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", help="Maximum total cost of the run in USD."),
    max_p95_latency_ms: Optional[float] = typer.Option(
        None, "--max-p95-latency-ms", help="Maximum p95 example latency (ms)."
    ),
    allow_missing_baseline: bool = typer.Option(
        False, "--allow-missing-baseline", help="Skip non-inferiority gates when the baseline alias is not set yet."
    ),
    junit: Optional[str] = typer.Option(None, "--junit", help="Write JUnit XML here."),
    markdown: Optional[str] = typer.Option(
        None, "--markdown", help="Write a Markdown summary here (e.g. $GITHUB_STEP_SUMMARY)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON."),
    store: Optional[str] = StoreOpt,
) -> None:
    """Check quality gates on a run: exit 0 pass, 1 a gate failed, 2 error."""
    from rich.console import Console

    console = Console(width=160, stderr=False)
    try:
        from ragtrail.cli._common import client
        from ragtrail.evals._gates import check_gates

        extra = gate_options_to_extra(
            gate, non_inferior, max_error_rate, max_undefined_rate, max_cost, max_p95_latency_ms
        )
        report = check_gates(
            client(store).store, run, gates, extra=extra, baseline=baseline,
            allow_missing_baseline=allow_missing_baseline or None,
        )  # fmt: skip
    except Exception as exc:  # any problem evaluating the gates is exit status 2, never 1
        from ragtrail.evals._gates import error_junit_xml

        msg = f"{type(exc).__name__}: {exc}" if not _is_ours(exc) else str(exc)
        typer.secho(f"error: {msg}", err=True, fg=typer.colors.RED)
        try:
            _write(junit, error_junit_xml(msg))
            _write(markdown, f"## ragtrail gates: ⚠️ error — `{run}`\n\n{msg}\n")
        except OSError:
            pass
        raise typer.Exit(EXIT_ERROR) from None
    _write(junit, report.to_junit_xml())
    _write(markdown, report.to_markdown())
    if as_json:
        typer.echo(json.dumps({
            "run": report.run.ref, "run_id": report.run.run_id, "passed": report.passed,
            "baseline": report.baseline.ref if report.baseline else None,
            "gates": [{"gate": r.gate.text, "status": r.status, "observed": r.observed, "detail": r.detail}
                      for r in report.results],
        }, indent=2))  # fmt: skip
    else:
        report.print(console)
    raise typer.Exit(report.exit_code)


def register(app: typer.Typer) -> None:
    """Add the commands of this module to ``app``."""
    app.command("gate")(gate_cmd)


def _is_ours(exc: BaseException) -> bool:
    from ragtrail._exceptions import RagtrailError

    return isinstance(exc, RagtrailError)
