"""Live scoring: ``Monitor`` scores new traces of a project as they arrive (``ragtrail monitor``).

How it keeps "every sampled trace scored exactly once, none skipped":

* **Which traces, in which order.** A trace is ready when its root span (no parent) ended more than
  ``settle_s`` ago: spans of a trace reach the store in batches (each app process exports every
  ``schedule_delay_ms``, a ``ragtrail serve`` receiver queues them), and the settle delay lets the
  whole trace arrive before it is scored. Ready traces are taken in ``(root end time, trace id)``
  order; a **cursor** in the store (table ``monitor_cursors``) holds the last pair passed.
* **Sampling** is a hash of the monitor name and the trace id, so a restart decides the same way.
* **Commit.** The scores of a batch (feedback rows, ``source="scorer"``, ``by="<scorer>@<version>"``)
  and the cursor move are written in ONE transaction that first checks the cursor is still where this
  instance read it (compare-and-set). A monitor killed mid-batch has written nothing: its successor
  scores the batch again. Two instances of the same monitor never both commit a batch; traces that
  already carry these scorers' feedback are not written twice.
* **Cost cap.** Judge scorers report their cost (``Score.details["cost_usd"]``); it is stored on the
  feedback row. Before each trace the monitor checks the last hour's spend (from the store, so a
  restart remembers it) plus the next trace's estimate against ``max_cost_per_hour``; at the cap it
  stops advancing (the remaining traces wait, they are not skipped) until the hour frees budget.

* **Late arrivals.** A root span that reaches the store more than ``settle_s`` after it ended (a
  sender that buffered its spans for longer) is behind the cursor. Every ``lookback_every_s`` the
  monitor looks ``lookback_s`` behind the cursor for sampled traces without its scores and scores
  them; that commit locks the cursor row first, so it serialises with every instance's batch commits
  and the existence check keeps "exactly once". Child spans arriving after their trace was scored do
  not cause a re-score: keep ``settle_s`` above the senders' export delay (the SDK exports every 0.5 s).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtrail._exceptions import ConfigError
from ragtrail._log import logger
from ragtrail.evals._types import Example, Score, Scorer

__all__ = ["Alert", "AlertEvent", "Monitor", "MonitorReport", "load_monitor"]


@dataclass
class Alert:
    """Fire when the rolling mean of a scorer's last ``window`` scores drops below ``below``.

    ``significant=True`` fires only when the whole confidence interval is below the threshold.
    Actions: ``call(event)``, a JSON line appended to ``file``, and a non-zero exit of
    ``ragtrail monitor --once``. An alert fires once when it starts and again only after recovering.
    """

    scorer: str
    below: float
    window: int = 100
    min_n: int = 20
    confidence: float = 0.95
    significant: bool = False
    file: str | None = None
    call: Callable[[AlertEvent], Any] | None = None


@dataclass
class AlertEvent:
    """One alert: the scorer's rolling mean and its confidence interval against the threshold."""

    monitor: str
    scorer: str
    mean: float
    ci_low: float
    ci_high: float
    n: int
    threshold: float
    at: float

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    def __str__(self) -> str:
        return (
            f"{self.monitor}: {self.scorer} mean {self.mean:.3f} (CI {self.ci_low:.3f}–{self.ci_high:.3f}, "
            f"n={self.n}) is below {self.threshold}"
        )


@dataclass
class MonitorReport:
    """What one :meth:`Monitor.run_once` did."""

    passed: int = 0
    """Ready traces the cursor moved past (scored or not sampled)."""
    scored: int = 0
    """Traces scored and committed."""
    cost_usd: float = 0.0
    capped: bool = False
    """Stopped at the hourly cost cap (traces are waiting)."""
    lost_races: int = 0
    """Batches another instance committed first (discarded here)."""
    late: int = 0
    """Traces scored by the look-back: their root span reached the store after the cursor passed it."""
    alerts: list[AlertEvent] = field(default_factory=list)
    """Alerts active after this pass."""


_ZS = {0.8: 1.2816, 0.9: 1.6449, 0.95: 1.96, 0.99: 2.5758}


def _mean_ci(values: Sequence[float], confidence: float) -> tuple[float, float, float]:
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return m, m, m
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    z = _ZS.get(round(confidence, 2), 1.96)
    h = z * math.sqrt(var / n)
    return m, m - h, m + h


class Monitor:
    """Score new traces of a project with ``scorers``, continuously or one pass at a time.

    Args:
        name: the monitor's name (its cursor in the store; one name = one stream of scores).
        scorers: Scorer objects, functions or registered names, as for ``Evaluation``.
        project: only traces of this project (None: all).
        store: the store to read traces from and write feedback to (default: as ``Client()``).
        sample_rate: fraction of traces scored (deterministic per trace id).
        max_cost_per_hour: USD the scorers may spend in any hour (None: no cap).
        settle_s: a trace is scored once its root span ended this long ago.
        batch_size: traces per transaction.
        input / output / reference: what the scorers see, as in ``Dataset.from_traces`` (dotted paths
            or callables; defaults: the root span's input and output, no reference).
        alerts: :class:`Alert` rules checked after each pass.
        lookback_s / lookback_every_s: every ``lookback_every_s`` seconds, score sampled traces that
            ended up to ``lookback_s`` before the cursor and have no scores (their root span reached
            the store late); 0 turns the look-back off.
    """

    def __init__(
        self,
        name: str,
        scorers: Iterable[Any],
        *,
        project: str | None = None,
        store: Any = None,
        sample_rate: float = 1.0,
        max_cost_per_hour: float | None = None,
        settle_s: float = 30.0,
        poll_s: float = 10.0,
        batch_size: int = 200,
        input: Any = "input",  # noqa: A002 - the name Dataset.from_traces uses
        output: Any = "output",
        reference: Any = None,
        alerts: Iterable[Alert] = (),
        lookback_s: float = 600.0,
        lookback_every_s: float = 60.0,
    ) -> None:
        from ragtrail.evals._datasets import _store
        from ragtrail.evals._harness import _scorer_list

        if not name or not isinstance(name, str):
            raise ConfigError("Monitor(name=...) must be a non-empty string")
        if not 0.0 < float(sample_rate) <= 1.0:
            raise ConfigError(f"Monitor(sample_rate={sample_rate!r}) must be in (0, 1]")
        if max_cost_per_hour is not None and max_cost_per_hour <= 0:
            raise ConfigError(f"Monitor(max_cost_per_hour={max_cost_per_hour!r}) must be positive (None: no cap)")
        if settle_s < 0 or poll_s <= 0 or batch_size < 1:
            raise ConfigError("Monitor: settle_s must be >= 0, poll_s > 0 and batch_size >= 1")
        self.name = name
        self.scorers: list[Scorer] = _scorer_list(scorers)
        if not self.scorers:
            raise ConfigError("Monitor needs at least one scorer")
        self.project = project
        self.store = _store(store)
        self.sample_rate = float(sample_rate)
        self.max_cost_per_hour = max_cost_per_hour
        self.settle_s = float(settle_s)
        self.poll_s = float(poll_s)
        self.batch_size = int(batch_size)
        self.mapping = (input, output, reference)
        self.alerts = list(alerts)
        self._firing: set[str] = set()
        self._trace_cost = 0.0  # the most one trace has cost so far: the estimate for the next one
        self._stop = threading.Event()
        self.lookback_s = float(lookback_s)
        self.lookback_every_s = float(lookback_every_s)
        self._next_look_back = 0.0

    def __repr__(self) -> str:
        return f"Monitor({self.name!r}, scorers={[s.name for s in self.scorers]}, project={self.project!r})"

    # ------------------------------------------------------------------------------ decisions
    def sampled(self, trace_id: str) -> bool:
        """Whether this monitor scores ``trace_id`` (the same answer after every restart)."""
        if self.sample_rate >= 1.0:
            return True
        h = hashlib.blake2b(f"{self.name}\x00{trace_id}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") < self.sample_rate * 2**64

    def spent_last_hour(self) -> float:
        """USD these scorers' stored scores cost in the last hour."""
        from ragtrail.store._feedback import scorer_spend

        return scorer_spend(self.store, [s.name for s in self.scorers], time.time() - 3600.0)

    def _estimate(self, ex: Example, output: Any) -> float:
        est = 0.0
        for s in self.scorers:
            f = getattr(s, "estimate_cost", None)
            if callable(f):
                try:
                    v = f(ex, output)
                    est += float(v) if v is not None else self._trace_cost
                except Exception:
                    est += self._trace_cost
        return max(est, self._trace_cost)

    # ------------------------------------------------------------------------------ scoring
    def _traces(self, ids: Sequence[str]) -> dict[str, Any]:
        from ragtrail.evals._from_traces import _by_ids

        return {t.trace_id: t for t in _by_ids(self.store, list(ids))} if ids else {}

    def _rows(self, tid: str, scores: Mapping[str, Score]) -> tuple[list[tuple[Any, ...]], float]:
        from ragtrail.tracing._feedback import feedback_row

        rows = []
        total = 0.0
        now = time.time()
        for s in self.scorers:
            sc = scores[s.name]
            cost = sc.details.get("cost_usd") if isinstance(sc.details, Mapping) else None
            cost = float(cost) if isinstance(cost, (int, float)) else None
            total += cost or 0.0
            details = {"monitor": self.name, "scorer_version": s.version, "status": sc.status}
            if sc.reason:
                details["reason"] = sc.reason[:2000]
            value: Any = sc.value if sc.status == "ok" else sc.status
            rows.append(
                feedback_row(
                    tid,
                    None,
                    s.name,
                    value,
                    comment=sc.reason if sc.status != "ok" else None,
                    source="scorer",
                    by=f"{s.name}@{s.version}",
                    created_at=now,
                    cost_usd=cost,
                    details=json.dumps(details, ensure_ascii=False, default=str),
                )
            )
        return rows, total

    def _spent(self) -> float:
        """The last hour's spend (0 without a cap); seeds the per-trace estimate in a fresh process."""
        if self.max_cost_per_hour is None:
            return 0.0
        if not self._trace_cost:  # a fresh process: the costliest trace so far is the estimate
            from ragtrail.store._feedback import scorer_max_cost

            self._trace_cost = scorer_max_cost(self.store, [s.name for s in self.scorers])
        return self.spent_last_hour()

    def _score(self, tid: str, t: Any, spent: float) -> tuple[list[tuple[Any, ...]], float] | None:
        """Feedback rows and cost for one trace; None when the cost cap leaves no room for it."""
        from ragtrail.evals._from_traces import examples_from_traces
        from ragtrail.evals._harness import score_items

        inp, outp, ref = self.mapping
        try:
            ex = examples_from_traces([t], inp, outp, ref)[0]
        except Exception as exc:  # e.g. no recorded input: scored as errors, never skipped silently
            scores = {s.name: Score.error(f"cannot build the example: {exc}") for s in self.scorers}
        else:
            output = ex.metadata.get("output")
            cap = self.max_cost_per_hour
            if cap is not None and (spent >= cap - 1e-12 or spent + self._estimate(ex, output) > cap + 1e-12):
                return None
            scores = score_items(self.scorers, [(ex, output, t)])[0]
        rows, cost = self._rows(tid, scores)
        self._trace_cost = max(self._trace_cost, cost)
        return rows, cost

    def _score_all(self, traces: Mapping[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
        """Feedback rows for every trace (no cost cap): one ``score_items`` call for the lot."""
        from ragtrail.evals._from_traces import examples_from_traces
        from ragtrail.evals._harness import score_items

        inp, outp, ref = self.mapping
        items: list[tuple[str, Example, Any, Any]] = []
        out: dict[str, list[tuple[Any, ...]]] = {}
        for tid, t in traces.items():
            try:
                ex = examples_from_traces([t], inp, outp, ref)[0]
            except Exception as exc:  # scored as errors, never skipped silently
                err = {s.name: Score.error(f"cannot build the example: {exc}") for s in self.scorers}
                out[tid] = self._rows(tid, err)[0]
                continue
            items.append((tid, ex, ex.metadata.get("output"), t))
        scored = score_items(self.scorers, [(ex, o, t) for _tid, ex, o, t in items])
        for (tid, _ex, _o, _t), scores in zip(items, scored, strict=True):
            rows, cost = self._rows(tid, scores)
            self._trace_cost = max(self._trace_cost, cost)
            out[tid] = rows
        return out

    def run_once(self, *, max_batches: int | None = None) -> MonitorReport:
        """Score every trace that is ready now (batch by batch, each committed with the cursor), look
        back for root spans that reached the store after the cursor passed their end time, then check
        the alerts. Returns what was done."""
        from ragtrail.store._feedback import commit_monitor_batch, monitor_cursor, root_candidates

        rep = MonitorReport()
        names = [s.name for s in self.scorers]
        batches = 0
        while not self._stop.is_set() and (max_batches is None or batches < max_batches):
            cur = monitor_cursor(self.store, self.name)
            after = None if cur is None else (cur[0], cur[1])
            ready_before = time.time_ns() - int(self.settle_s * 1e9)
            cands = root_candidates(self.store, self.project, after, ready_before, self.batch_size)
            if not cands:
                break
            batches += 1
            traces = self._traces(list(dict.fromkeys(t for t, _ in cands if self.sampled(t))))
            spent = self._spent()
            rows_by: dict[str, list[tuple[Any, ...]]] = {}
            done_upto = -1
            batch_cost = 0.0
            if self.max_cost_per_hour is None:  # no cap: the whole batch at once (batched scorers get it whole)
                rows_by = self._score_all(traces)
                batch_cost = sum(r[11] or 0.0 for rows in rows_by.values() for r in rows)
                done_upto = len(cands) - 1
            for i, (tid, _end) in enumerate(cands):
                if done_upto >= i:
                    break
                if tid in rows_by or tid not in traces:  # not sampled, a second root, or no spans
                    done_upto = i
                    continue
                got = self._score(tid, traces[tid], spent + batch_cost)
                if got is None:
                    rep.capped = True
                    break
                rows_by[tid], cost = got
                batch_cost += cost
                done_upto = i
            if done_upto < 0:
                break  # capped before the first trace of the batch
            new = (cands[done_upto][1], cands[done_upto][0])
            if commit_monitor_batch(self.store, self.name, after, new, done_upto + 1, rows_by, names):
                rep.passed += done_upto + 1
                rep.scored += len(rows_by)
                rep.cost_usd += batch_cost
            else:
                rep.lost_races += 1
                logger.info("ragtrail monitor %s: another instance committed first; re-reading the cursor", self.name)
            if rep.capped:
                break
        if not rep.capped and not self._stop.is_set():
            self._look_back(rep)
        if rep.capped:
            logger.warning(
                "ragtrail monitor %s: hourly cost cap $%.4f reached; waiting traces are scored when budget frees",
                self.name,
                self.max_cost_per_hour,
            )
        rep.alerts = self.check_alerts()
        return rep

    def _look_back(self, rep: MonitorReport) -> None:
        """Score sampled traces behind the cursor (within ``lookback_s``) that have no scores yet: their
        root span reached the store after the cursor had passed its end time (a slow sender)."""
        from ragtrail.store._feedback import commit_late_feedback, monitor_cursor, unscored_roots

        if self.lookback_s <= 0 or time.monotonic() < self._next_look_back:
            return
        self._next_look_back = time.monotonic() + self.lookback_every_s
        cur = monitor_cursor(self.store, self.name)
        if cur is None:
            return
        names = [s.name for s in self.scorers]
        late = [
            tid
            for tid, end in unscored_roots(self.store, self.project, cur[0] - int(self.lookback_s * 1e9), cur[0], names)
            if (end, tid) <= (cur[0], cur[1]) and self.sampled(tid)
        ]
        if not late:
            return
        traces = self._traces(list(dict.fromkeys(late)))
        spent = self._spent()
        rows_by: dict[str, list[tuple[Any, ...]]] = {}
        cost_total = 0.0
        for tid, t in traces.items():
            got = self._score(tid, t, spent + cost_total)
            if got is None:
                rep.capped = True
                break
            rows_by[tid], cost = got
            cost_total += cost
        if rows_by:
            n = commit_late_feedback(self.store, self.name, rows_by, names)
            rep.late += n
            rep.scored += n
            rep.cost_usd += cost_total
            logger.info("ragtrail monitor %s: scored %d trace(s) whose root span arrived late", self.name, n)

    # ------------------------------------------------------------------------------ alerts
    def check_alerts(self) -> list[AlertEvent]:
        """Evaluate the alert rules on the stored scores; run the actions of alerts that start now.
        Returns the alerts active now."""
        from ragtrail.store._feedback import recent_scores

        active = []
        for a in self.alerts:
            vals = recent_scores(self.store, a.scorer, a.window)
            key = f"{a.scorer}<{a.below}"
            if len(vals) < max(1, a.min_n):
                self._firing.discard(key)
                continue
            m, lo, hi = _mean_ci(vals, a.confidence)
            firing = hi < a.below if a.significant else m < a.below
            if not firing:
                self._firing.discard(key)
                continue
            ev = AlertEvent(self.name, a.scorer, m, lo, hi, len(vals), a.below, time.time())
            active.append(ev)
            if key in self._firing:
                continue
            self._firing.add(key)
            logger.warning("ragtrail monitor alert: %s", ev)
            if a.file:
                try:
                    with open(a.file, "a", encoding="utf-8") as f:
                        f.write(ev.to_json() + "\n")
                except OSError:
                    logger.warning("ragtrail monitor: cannot write the alert to %s", a.file, exc_info=True)
            if a.call is not None:
                try:
                    a.call(ev)
                except Exception:
                    logger.warning("ragtrail monitor: the alert callable failed", exc_info=True)
        return active

    # ------------------------------------------------------------------------------ loop
    def run(self, *, duration_s: float | None = None) -> MonitorReport:
        """Score continuously (a pass every ``poll_s``) until :meth:`stop` or ``duration_s``; returns the
        totals."""
        total = MonitorReport()
        deadline = None if duration_s is None else time.monotonic() + duration_s
        self._stop.clear()
        while not self._stop.is_set():
            rep = self.run_once()
            total.passed += rep.passed
            total.scored += rep.scored
            total.cost_usd += rep.cost_usd
            total.lost_races += rep.lost_races
            total.late += rep.late
            total.capped = rep.capped
            total.alerts = rep.alerts
            if deadline is not None and time.monotonic() >= deadline:
                break
            wait = self.poll_s if deadline is None else min(self.poll_s, max(0.0, deadline - time.monotonic()))
            self._stop.wait(wait)
        return total

    def stop(self) -> None:
        """Make :meth:`run` return after the batch in progress."""
        self._stop.set()

    def cursor(self) -> tuple[int, str, int] | None:
        """(root end time ns, trace id, traces passed) of the stored cursor, None before the first commit."""
        from ragtrail.store._feedback import monitor_cursor

        return monitor_cursor(self.store, self.name)


def load_monitor(path: str | Path, *, store: str | None = None) -> Monitor:
    """A :class:`Monitor` from ``monitor.yaml``::

    name: support-live
    project: support-bot
    store: .ragtrail/ragtrail.db        # optional
    sample_rate: 0.2
    max_cost_per_hour: 2.0
    settle_s: 30
    poll_s: 10
    reference: feedback.corrected_answer   # optional; input/output default to the root span's
    scorers: [token_f1, my_app.scorers:faithful]
    alerts:
      - {scorer: faithful, below: 0.8, window: 200, min_n: 30, file: alerts.log}
    """
    import yaml

    from ragtrail.evals._config import _scorer, import_object

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"monitor config {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: malformed YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with name and scorers at the top level")
    known = {"name", "project", "store", "sample_rate", "max_cost_per_hour", "settle_s", "poll_s", "batch_size",
             "input", "output", "reference", "scorers", "alerts", "lookback_s", "lookback_every_s"}  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; valid keys: {sorted(known)}")
    for req in ("name", "scorers"):
        if not data.get(req):
            raise ConfigError(f"{p}: {req!r} is required")
    if not isinstance(data["scorers"], list):
        raise ConfigError(f"{p}: scorers must be a list")
    base = p.parent.resolve()
    alerts = []
    for i, a in enumerate(data.get("alerts") or []):
        if not isinstance(a, dict) or "scorer" not in a or "below" not in a:
            raise ConfigError(f"{p}: alerts[{i}] needs at least 'scorer' and 'below'")
        a = dict(a)
        if a.get("call"):
            a["call"] = import_object(str(a["call"]), base, "alert callable")
        if a.get("file") and not Path(a["file"]).is_absolute():
            a["file"] = str(base / a["file"])
        try:
            alerts.append(Alert(**a))
        except TypeError as exc:
            raise ConfigError(f"{p}: alerts[{i}]: {exc}") from exc
    numbers = ("sample_rate", "max_cost_per_hour", "settle_s", "poll_s", "batch_size", "lookback_s", "lookback_every_s")
    kw = {k: data[k] for k in numbers if k in data}
    for k in ("input", "output", "reference"):
        if k in data:
            kw[k] = data[k]
    return Monitor(
        str(data["name"]), [_scorer(s, base) for s in data["scorers"]], project=data.get("project"),
        store=store or data.get("store"), alerts=alerts, **kw,
    )  # fmt: skip
