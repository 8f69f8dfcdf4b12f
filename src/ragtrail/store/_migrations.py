"""Ordered, named schema migrations. Append only: never edit a migration that has shipped.

Each migration is ``(version, name, sqlite_sql, postgres_sql)`` (``postgres_sql`` may be a function of
the migration's cursor, for a change that reads the catalogue); applied versions are recorded in
``ragtrail_migrations``. A store whose recorded version is newer than the last one here was written by
a newer ragtrail and is refused with :class:`~ragtrail.SchemaVersionError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ragtrail.store._partitions import migrate_spans_to_partitions

_SPANS = """
CREATE TABLE IF NOT EXISTS spans (
    trace_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    parent_span_id TEXT,
    name TEXT NOT NULL,
    kind TEXT,
    start_time_ns BIGINT NOT NULL,
    end_time_ns BIGINT NOT NULL,
    duration_ms DOUBLE PRECISION,
    status TEXT,
    status_message TEXT,
    model TEXT,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_usd DOUBLE PRECISION,
    project TEXT,
    attributes TEXT,
    events TEXT,
    resource TEXT,
    PRIMARY KEY (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS spans_project_start ON spans (project, start_time_ns);
CREATE INDEX IF NOT EXISTS spans_start ON spans (start_time_ns);
"""

_EVALS = """
CREATE TABLE IF NOT EXISTS datasets (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    n_examples BIGINT NOT NULL,
    description TEXT,
    meta TEXT,
    PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS dataset_examples (
    dataset TEXT NOT NULL,
    version TEXT NOT NULL,
    example_id TEXT NOT NULL,
    position BIGINT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (dataset, version, example_id)
);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION,
    status TEXT NOT NULL,
    dataset_name TEXT,
    dataset_version TEXT,
    config TEXT,
    config_hash TEXT,
    lineage TEXT,
    summary TEXT,
    source_run_id TEXT,
    sweep_id TEXT,
    UNIQUE (name, version)
);
CREATE TABLE IF NOT EXISTS run_examples (
    run_id TEXT NOT NULL,
    example_id TEXT NOT NULL,
    status TEXT NOT NULL,
    output TEXT,
    error TEXT,
    trace_id TEXT,
    latency_ms DOUBLE PRECISION,
    input_tokens BIGINT,
    output_tokens BIGINT,
    cost_usd DOUBLE PRECISION,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, example_id)
);
CREATE TABLE IF NOT EXISTS run_results (
    run_id TEXT NOT NULL,
    example_id TEXT NOT NULL,
    scorer TEXT NOT NULL,
    score DOUBLE PRECISION,
    status TEXT NOT NULL,
    reason TEXT,
    details TEXT,
    trace_id TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, example_id, scorer)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    run_id TEXT NOT NULL,
    set_at DOUBLE PRECISION NOT NULL,
    set_by TEXT,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS alias_history (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    run_id TEXT NOT NULL,
    previous_run_id TEXT,
    set_at DOUBLE PRECISION NOT NULL,
    set_by TEXT
);
CREATE TABLE IF NOT EXISTS judge_cache (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL
);
"""

_ARTIFACTS = """
CREATE TABLE IF NOT EXISTS artifacts (
    name TEXT PRIMARY KEY,
    type TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    description TEXT
);
CREATE TABLE IF NOT EXISTS artifact_versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    digest TEXT NOT NULL,
    manifest TEXT NOT NULL,
    n_files BIGINT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    created_by TEXT,
    run_id TEXT,
    description TEXT,
    metadata TEXT,
    PRIMARY KEY (name, version),
    UNIQUE (name, digest)
);
CREATE TABLE IF NOT EXISTS artifact_usage (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    direction TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (run_id, name, version, direction)
);
CREATE INDEX IF NOT EXISTS artifact_usage_artifact ON artifact_usage (name, version);
CREATE TABLE IF NOT EXISTS prompts (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    digest TEXT NOT NULL,
    format TEXT NOT NULL,
    template TEXT NOT NULL,
    model TEXT,
    params TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    created_by TEXT,
    PRIMARY KEY (name, version),
    UNIQUE (name, digest)
)
"""

# issue 14 (the web UI): root spans by time (the trace list and its keyset pages; with the end time, the
# overview's latencies), by project; error spans by trace (errors filter, error rate); spans with a model
# or usage (a fraction of all spans) by time, covering the overview's sums, and by trace, covering the
# per-trace token and cost sums of the min-cost filter and the cost/token sorts
_UI_INDICES = """
CREATE INDEX IF NOT EXISTS spans_roots_start ON spans (start_time_ns, trace_id, end_time_ns, parent_span_id)
    WHERE parent_span_id IS NULL;
CREATE INDEX IF NOT EXISTS spans_roots_project_start ON spans (project, start_time_ns, trace_id)
    WHERE parent_span_id IS NULL;
CREATE INDEX IF NOT EXISTS spans_errors ON spans (trace_id, start_time_ns) WHERE status = 'ERROR';
CREATE INDEX IF NOT EXISTS spans_usage_start
    ON spans (start_time_ns, kind, model, input_tokens, output_tokens, cost_usd, project)
    WHERE model IS NOT NULL OR input_tokens IS NOT NULL OR output_tokens IS NOT NULL OR cost_usd IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_usage_trace ON spans (trace_id, input_tokens, output_tokens, cost_usd)
    WHERE model IS NOT NULL OR input_tokens IS NOT NULL OR output_tokens IS NOT NULL OR cost_usd IS NOT NULL
"""

# issue 15: session and user promoted on spans; feedback (history, never overwritten); monitor cursors
_PRODUCTION = """
ALTER TABLE spans ADD COLUMN session_id TEXT;
ALTER TABLE spans ADD COLUMN user_id TEXT;
CREATE INDEX IF NOT EXISTS spans_session ON spans (session_id, start_time_ns) WHERE session_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_user ON spans (user_id, start_time_ns) WHERE user_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_roots_end ON spans (end_time_ns, trace_id) WHERE parent_span_id IS NULL;
CREATE INDEX IF NOT EXISTS spans_roots_project_end ON spans (project, end_time_ns, trace_id) WHERE parent_span_id IS NULL;
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id TEXT PRIMARY KEY,
    trace_id TEXT NOT NULL,
    span_id TEXT,
    name TEXT NOT NULL,
    value_type TEXT NOT NULL,
    value_num DOUBLE PRECISION,
    value_text TEXT,
    comment TEXT,
    source TEXT NOT NULL,
    author TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    cost_usd DOUBLE PRECISION,
    details TEXT
);
CREATE INDEX IF NOT EXISTS feedback_trace ON feedback (trace_id, name, created_at);
CREATE INDEX IF NOT EXISTS feedback_name_time ON feedback (name, created_at);
CREATE TABLE IF NOT EXISTS monitor_cursors (
    monitor TEXT PRIMARY KEY,
    end_time_ns BIGINT NOT NULL,
    trace_id TEXT NOT NULL,
    scored BIGINT NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)
"""

# issue 16: per-minute aggregates of the GenAI metrics (every call, sampled or not). One row per minute x
# series; the series columns are '' when an attribute is absent so that they can be part of the key.
_METRIC_MINUTES = """
CREATE TABLE IF NOT EXISTS metric_minutes (
    minute BIGINT NOT NULL,
    project TEXT NOT NULL,
    metric TEXT NOT NULL,
    operation TEXT NOT NULL,
    provider TEXT NOT NULL,
    model TEXT NOT NULL,
    response_model TEXT NOT NULL,
    token_type TEXT NOT NULL,
    error_type TEXT NOT NULL,
    count BIGINT NOT NULL,
    sum DOUBLE PRECISION NOT NULL,
    min DOUBLE PRECISION,
    max DOUBLE PRECISION,
    PRIMARY KEY (project, metric, minute, operation, provider, model, response_model, token_type, error_type)
);
CREATE INDEX IF NOT EXISTS metric_minutes_minute ON metric_minutes (minute)
"""

# issue 21: the OTel span kind, links (JSON list of {trace_id, span_id, attributes[, trace_state]}) and the
# instrumentation scope's name and version; ``resource`` now holds every resource attribute. Existing rows
# keep NULLs (read as "not recorded"), so stores written before stay readable.
_OTEL_FIELDS = """
ALTER TABLE spans ADD COLUMN span_kind TEXT;
ALTER TABLE spans ADD COLUMN links TEXT;
ALTER TABLE spans ADD COLUMN scope_name TEXT;
ALTER TABLE spans ADD COLUMN scope_version TEXT
"""

# issue 16: on PostgreSQL, spans partitioned by RANGE (start_time_ns), key (trace_id, span_id, start_time_ns)
# (store/_partitions.py says why writes stay idempotent). Python, not SQL: it reads the catalogue. SQLite: no-op.
_PARTITIONS = migrate_spans_to_partitions

# issue 24: compact storage. SQLite keeps a span's large text attributes zstd/zlib-compressed in ``content``
# (store/_codec.py) and reads them back through ragtrail_attributes(attributes, content); PostgreSQL
# compresses large values itself (TOAST) and leaves the column empty. Rows written before stay as they were.
_SPAN_CONTENT_SQLITE = "ALTER TABLE spans ADD COLUMN content BLOB"
_SPAN_CONTENT_PG = "ALTER TABLE spans ADD COLUMN IF NOT EXISTS content BYTEA"

# issue 19: the cached part of the input tokens (``gen_ai.usage.cache_read.input_tokens``) as a promoted
# column, since cost depends on it. Existing rows are filled from their attributes JSON: an integer (or a
# whole-number float) within 64 bits is taken; anything else (text, fractions, larger values, text that is
# not JSON) stays NULL. Small numbers always stay in ``attributes`` (store/_codec.py moves only long strings
# to ``content``). The key is written out here, not taken from semconv: a shipped migration never changes.
_CACHED_TOKENS_SQLITE = """
ALTER TABLE spans ADD COLUMN cached_input_tokens INTEGER;
UPDATE spans SET cached_input_tokens = (
    SELECT CASE
        WHEN typeof(v) = 'integer' THEN v
        WHEN typeof(v) = 'real' AND abs(v) < 9.2e18 AND v = CAST(v AS INTEGER) THEN CAST(v AS INTEGER)
    END
    FROM (SELECT CASE WHEN json_valid(attributes)
                 THEN json_extract(attributes, '$."gen_ai.usage.cache_read.input_tokens"') END AS v))
    WHERE attributes LIKE '%"gen_ai.usage.cache_read.input_tokens"%'
"""
# PostgreSQL: ``attributes`` is TEXT and may hold text that is not JSON, which a ::jsonb cast would refuse
# (failing the migration): a pattern on the text takes the plain number after the key, then a range check.
# (No question mark in this SQL: the PostgreSQL cursor turns it into a placeholder.)
_CACHED_TOKENS_PG = r"""
ALTER TABLE spans ADD COLUMN IF NOT EXISTS cached_input_tokens BIGINT;
UPDATE spans SET cached_input_tokens = (
    SELECT CASE WHEN n BETWEEN -9223372036854775808 AND 9223372036854775807 THEN n::BIGINT END
    FROM (SELECT substring(attributes from
        '"gen_ai\.usage\.cache_read\.input_tokens"\s*:\s*(-{0,1}[0-9]{1,19})(\.0*){0,1}\s*[,}]')::NUMERIC AS n) AS m)
    WHERE attributes LIKE '%"gen_ai.usage.cache_read.input_tokens"%'
"""

# issue 24: zstd dictionaries trained on a project's own span content (store/_codec.py); a blob that was
# compressed with one names its id. Rows are never deleted while spans may refer to them. PostgreSQL keeps
# the table empty (TOAST compresses there) but has it, so that both backends have the same schema.
_CONTENT_DICTS = """
CREATE TABLE IF NOT EXISTS content_dicts (
    id BIGINT PRIMARY KEY,
    project TEXT NOT NULL,
    created_ns BIGINT NOT NULL,
    codec TEXT NOT NULL,
    dict BYTEA_OR_BLOB NOT NULL,
    samples INTEGER NOT NULL,
    sample_bytes BIGINT NOT NULL,
    plain_bytes BIGINT NOT NULL,
    dict_bytes BIGINT NOT NULL
)
"""

MIGRATIONS: list[tuple[int, str, str, str | Callable[[Any], None]]] = [
    (1, "spans", _SPANS, _SPANS),
    (2, "datasets_runs_aliases_cache", _EVALS, _EVALS),
    (4, "sessions_users_feedback_monitor", _PRODUCTION, _PRODUCTION),
    (6, "ui_root_span_indices", _UI_INDICES, _UI_INDICES),
    (7, "artifacts_prompts", _ARTIFACTS, _ARTIFACTS),
    (9, "metric_minutes", _METRIC_MINUTES, _METRIC_MINUTES),
    (10, "span_kind_links_scope", _OTEL_FIELDS, _OTEL_FIELDS),
    (11, "pg_spans_partitioned_by_time", "", _PARTITIONS),
    (12, "span_content_compressed", _SPAN_CONTENT_SQLITE, _SPAN_CONTENT_PG),
    (13, "spans_cached_input_tokens", _CACHED_TOKENS_SQLITE, _CACHED_TOKENS_PG),
    (
        14,
        "content_dicts",
        _CONTENT_DICTS.replace("BYTEA_OR_BLOB", "BLOB"),
        _CONTENT_DICTS.replace("BYTEA_OR_BLOB", "BYTEA"),
    ),
]

LATEST = MIGRATIONS[-1][0]
