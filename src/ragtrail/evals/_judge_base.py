"""What every LLM-judge scorer shares: reading the question, answer and contexts of an example, the
:class:`JudgeScorer` base class (structured verdicts, trials, raw outputs and cost in ``details``)
and the cost :func:`estimate` of a set of scorers."""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from ragtrail._exceptions import ConfigError
from ragtrail.evals._judge import Estimate, Judge, JudgeResult, run_sync
from ragtrail.evals._types import Example, Score, Scorer

if TYPE_CHECKING:
    from ragtrail.tracing._model import Trace

_CLOSED = ConfigDict(extra="forbid")


# ------------------------------------------------------------------------------- extraction
def _answer(output: Any, trace: Trace | None) -> str | None:
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        for key in ("answer", "output", "result", "text", "response"):
            v = output.get(key)
            if isinstance(v, str):
                return v
        return None
    content = getattr(output, "content", None)
    if isinstance(content, str):
        return content
    if output is None and trace is not None:
        root = trace.root
        out = root.output if root is not None else None
        return out if isinstance(out, str) else None
    return None


def _question(example: Example) -> str:
    x = example.input
    if isinstance(x, str):
        return x
    if isinstance(x, Mapping):
        for key in ("question", "query", "input", "prompt"):
            v = x.get(key)
            if isinstance(v, str):
                return v
    import json

    return json.dumps(x, ensure_ascii=False, default=str)


def _doc_text(doc: Any) -> tuple[str | None, str | None]:
    """(id, text) of a retrieved document in any of the shapes pipelines return."""
    if isinstance(doc, str):
        return None, doc
    if isinstance(doc, Mapping):
        text = next((doc[k] for k in ("content", "page_content", "text") if isinstance(doc.get(k), str)), None)
        md = doc.get("metadata") if isinstance(doc.get("metadata"), Mapping) else {}
        did = doc.get("id") or (md or {}).get("doc_id")
        return (None if did is None else str(did)), text
    text = getattr(doc, "page_content", None)
    did = getattr(doc, "id", None)
    return (None if did is None else str(did)), (text if isinstance(text, str) else None)


def _contexts(output: Any, trace: Trace | None) -> tuple[list[tuple[str | None, str]] | None, str]:
    """Retrieved contexts as (id, text), from the output's ``contexts`` else the trace; with the source."""
    docs: list[Any] | None = None
    source = "output"
    if isinstance(output, Mapping) and isinstance(output.get("contexts"), list):
        docs = output["contexts"]
    elif trace is not None and trace.retrievals():
        docs = trace.retrieved_documents()
        source = "trace"
    if docs is None:
        return None, "none"
    out = []
    for d in docs:
        did, text = _doc_text(d)
        if text is not None:
            out.append((did, text))
    if docs and not out:
        return [], source + " (documents without content: is capture_content off?)"
    return out, source


def _model(name: str, **fields: Any) -> type[BaseModel]:
    """A closed pydantic model (``additionalProperties: false``) from ``name=(type, default/Field)`` pairs."""
    return create_model(name, __config__=_CLOSED, **fields)  # type: ignore[no-any-return, call-overload]


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# ----------------------------------------------------------------------------- base class
class JudgeScorer(Scorer):
    """Base class of LLM-judge scorers (subclass it for your own judge metric).

    Subclasses define ``system_template`` / ``user_template`` (``str.format`` fields from
    :meth:`inputs`), :meth:`schema` (a pydantic model, verdict first) and :meth:`interpret`.
    Changing a template or ``version`` changes every cache key, so cached verdicts are never stale.
    """

    name = "judge"
    version = "1"
    is_async = True
    system_template = ""
    user_template = ""

    def __init__(
        self,
        judge: Any = None,
        *,
        explain: bool = True,
        trials: int = 1,
        name: str | None = None,
        explanation_chars: int = 300,
        max_context_chars: int = 2000,
        system_template: str | None = None,
        user_template: str | None = None,
    ) -> None:
        if trials < 1:
            raise ConfigError(f"{type(self).__name__}(trials={trials}): trials must be >= 1")
        self._judge_arg = judge
        self._judge: Judge | None = judge if isinstance(judge, Judge) else None
        self.explain = bool(explain)
        self.trials = int(trials)
        self.explanation_chars = int(explanation_chars)
        self.max_context_chars = int(max_context_chars)
        if name:
            self.name = name
        if system_template is not None:
            self.system_template = system_template
        if user_template is not None:
            self.user_template = user_template

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("_schemas", None)
        if not isinstance(self._judge_arg, Judge):  # rebuilt from the model/spec where it is unpickled
            state["_judge"] = None
        return state

    # -- configuration -------------------------------------------------------------------------
    @property
    def judge(self) -> Judge:
        if self._judge is None:
            self._judge = Judge.coerce(self._judge_arg)
        return self._judge

    @property
    def params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"explain": self.explain, "trials": self.trials}
        if self._judge is not None or self._judge_arg is not None:
            p["judge"] = self.judge.describe()
        return p

    def _explanation_field(self) -> dict[str, Any]:
        if not self.explain:
            return {}
        return {"explanation": (str, Field(max_length=self.explanation_chars))}

    # -- what subclasses define ------------------------------------------------------------
    def inputs(self, example: Example, output: Any, trace: Trace | None) -> dict[str, Any] | Score:
        """Template fields for this example, or a Score (usually undefined) when there is nothing to judge."""
        raise NotImplementedError

    def schema(self, inputs: Mapping[str, Any]) -> type[BaseModel]:
        raise NotImplementedError

    def interpret(self, verdict: Any, inputs: Mapping[str, Any]) -> Score:
        raise NotImplementedError

    def schema_key(self, inputs: Mapping[str, Any]) -> Any:
        """What the schema depends on besides the scorer's settings (e.g. the number of documents)."""
        return None

    def schema_for(self, inputs: Mapping[str, Any]) -> type[BaseModel]:
        """:meth:`schema`, built once per distinct :meth:`schema_key` (pydantic model creation is slow)."""
        cache = self.__dict__.setdefault("_schemas", {})
        k = (self.explain, self.explanation_chars, self.schema_key(inputs))
        model = cache.get(k)
        if model is None:
            model = cache[k] = self.schema(inputs)
        return model  # type: ignore[no-any-return]

    def validator(self, inputs: Mapping[str, Any]) -> Callable[[BaseModel], str | None] | None:
        return None

    def logprobs_useful(self) -> bool:
        return not self.explain

    # -- the call -------------------------------------------------------------------------------
    def messages(self, inputs: Mapping[str, Any]) -> list[dict[str, str]]:
        fields = {k: v for k, v in inputs.items() if not k.startswith("_")}
        msgs = []
        if self.system_template:
            msgs.append({"role": "system", "content": self.system_template.format(**fields)})
        msgs.append({"role": "user", "content": self.user_template.format(**fields)})
        return msgs

    async def ascore(self, example: Example, output: Any, trace: Trace) -> Score:
        prepared = self.inputs(example, output, trace)
        if isinstance(prepared, Score):
            return prepared
        msgs = self.messages(prepared)
        schema = self.schema_for(prepared)
        judge = self.judge
        results = await asyncio.gather(
            *(
                judge.acall(
                    msgs, schema, scorer=self.name, scorer_version=f"{type(self).__name__}:{self.version}", trial=i,
                    logprobs=self.logprobs_useful(), validate=self.validator(prepared),
                )
                for i in range(self.trials)
            )
        )  # fmt: skip
        return self._combine([self._one(r, prepared) for r in results], results)

    def score(self, example: Example, output: Any, trace: Trace) -> Score:
        return run_sync(self.ascore(example, output, trace))

    def _one(self, res: JudgeResult, inputs: Mapping[str, Any]) -> Score:
        if not res.ok:
            return Score.error(res.error or "the judge gave no verdict", judge=res.details())
        try:
            s = self.interpret(res.parsed, inputs)
        except Exception as exc:  # a bug in interpret must not become a number
            return Score.error(f"could not interpret the verdict: {type(exc).__name__}: {exc}", judge=res.details())
        s.details["judge"] = res.details()
        return s

    def _combine(self, scores: list[Score], results: Sequence[JudgeResult]) -> Score:
        costs = [r.cost_usd for r in results if r.cost_usd is not None]
        if len(scores) == 1:
            s = scores[0]
            if costs:
                s.details["cost_usd"] = sum(costs)
            return s
        oks = [s for s in scores if s.status == "ok"]
        trials = [{"value": s.value, "status": s.status, "reason": s.reason, **s.details} for s in scores]
        details: dict[str, Any] = {"trials": trials, "n_trials": len(scores), "n_ok": len(oks)}
        if costs:
            details["cost_usd"] = sum(costs)
        if not oks:
            statuses = {s.status for s in scores}
            reasons = "; ".join(sorted({str(s.reason) for s in scores}))[:2000]
            if statuses == {"undefined"}:
                return Score.undefined(reasons, **details)
            return Score.error(f"no trial gave a verdict: {reasons}", **details)
        values = [float(s.value) for s in oks if s.value is not None]
        mode_count = Counter(round(v, 9) for v in values).most_common(1)[0][1]
        details.update(
            variance=statistics.pvariance(values) if len(values) > 1 else 0.0,
            std=statistics.pstdev(values) if len(values) > 1 else 0.0,
            self_consistency=mode_count / len(values),
            n_error=sum(1 for s in scores if s.status == "error"),
            n_undefined=sum(1 for s in scores if s.status == "undefined"),
        )
        return Score.ok(statistics.fmean(values), **details)

    def describe(self) -> Mapping[str, Any]:
        d = dict(super().describe())
        if self._judge is not None or self._judge_arg is not None:
            d["judge_model"] = self.judge.model_id
        return d

    # -- dry run -------------------------------------------------------------------------------
    def estimate_cost(self, example: Example, output: Any = None) -> float | None:
        """USD the judge calls for ``example`` would cost (0 when cached, None when the price is unknown);
        the harness's dry run sums this over the examples to run."""
        return self.estimate([(example, output)]).cost_usd

    def estimate(
        self, items: Sequence[tuple[Example, Any] | tuple[Example, Any, Any]], *, assumed_answer: str = "x" * 400
    ) -> Estimate:
        """Judge calls, cache hits, tokens and cost of scoring ``items`` ((example, output[, trace]);
        an output of None stands for an answer of ``len(assumed_answer)`` characters), making no call."""
        judge = self.judge
        calls = cached = tin = 0
        for item in items:
            example, output = item[0], item[1]
            trace = item[2] if len(item) > 2 else None
            if output is None:
                output = {"answer": assumed_answer, "contexts": list(example.contexts or ["x" * 1000])}
            prepared = self.inputs(example, output, trace)  # type: ignore[arg-type]
            if isinstance(prepared, Score):
                continue
            msgs = self.messages(prepared)
            schema = self.schema_for(prepared)
            for i in range(self.trials):
                calls += 1
                key = judge.key_for(
                    msgs, schema, scorer=self.name, scorer_version=f"{type(self).__name__}:{self.version}", trial=i
                )
                if judge.cache is not None and judge.cache.contains(key):
                    cached += 1
                    continue
                tin += judge.estimate_tokens(msgs) + 200  # + the schema instruction
        tout = (calls - cached) * judge.max_tokens
        return Estimate(calls, cached, tin, tout, judge.cost_of(tin, tout) if calls > cached else 0.0)


def estimate(scorers: Sequence[Scorer], items: Sequence[tuple[Example, Any]]) -> Estimate:
    """The dry-run estimate of every judge scorer in ``scorers`` over ``items``, summed."""
    parts = [s.estimate(items) for s in scorers if isinstance(s, JudgeScorer)]
    cost: float | None = 0.0
    for p in parts:
        cost = None if cost is None or p.cost_usd is None else cost + p.cost_usd
    return Estimate(
        sum(p.calls for p in parts), sum(p.cached for p in parts), sum(p.input_tokens for p in parts),
        sum(p.output_tokens for p in parts), cost,
    )  # fmt: skip
