"""Built-in LLM-judge scorers: faithfulness, answer relevance, context relevance, correctness, rubric.

Every judge scorer:

* takes ``judge=`` as a :class:`~ragtrail.evals.Judge` or a bare LangChain chat model;
* asks for a structured verdict (verdict first, free text bounded by ``maxLength``); ``explain=False``
  asks for the bare verdict (an enum or a bounded integer), which small local models produce reliably;
* keeps the judge's raw output of every call in ``Score.details["judge"]`` and its cost in
  ``Score.details["cost_usd"]``;
* turns anything it cannot read (prose, truncated JSON, a refusal, an empty reply) into an ``error``
  score with the reason and the raw text — never a number — and anything there is nothing to judge
  on (no answer, no contexts, no reference, no claims) into ``undefined``;
* with ``trials=n`` asks the judge ``n`` times (seed ``seed + i``) and reports the mean as the value,
  with the per-trial values, their variance and the self-consistency in ``details``.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

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


# ------------------------------------------------------------------------------ faithfulness
class Faithfulness(JudgeScorer):
    """Faithfulness: the share of the answer's claims that the retrieved contexts support.

    ``value = supported_claims / total_claims`` over the claims the judge extracts from the answer
    (at most ``max_claims``), in ONE judge call per example that both extracts and verifies all
    claims. Per-claim verdicts are kept in ``details["claims"]``.

    Edge cases: no answer or an empty answer → undefined; no retrieved contexts (neither
    ``output["contexts"]`` nor RETRIEVER spans with content) → undefined; the judge finds no
    factual claim (an empty list) → undefined ("no claims"), never 1 or 0.
    """

    name = "faithfulness"
    version = "1"
    system_template = (
        "You verify whether an ANSWER is supported by retrieved CONTEXT. Split the ANSWER into its atomic "
        "factual claims (at most {max_claims}; none if it states no facts). For each claim give the verdict "
        '"supported" when the CONTEXT states or directly implies it, else "unsupported". Use only the CONTEXT, '
        "not your own knowledge."
    )
    user_template = "QUESTION:\n{question}\n\nCONTEXT:\n{context}\n\nANSWER:\n{answer}"

    def __init__(self, judge: Any = None, *, max_claims: int = 20, claim_chars: int = 200, **kw: Any) -> None:
        super().__init__(judge, **kw)
        self.max_claims = int(max_claims)
        self.claim_chars = int(claim_chars)

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "max_claims": self.max_claims}

    def inputs(self, example: Example, output: Any, trace: Trace | None) -> dict[str, Any] | Score:
        answer = _answer(output, trace)
        if answer is None or not answer.strip():
            return Score.undefined("no answer to check (the output has no answer text)")
        docs, source = _contexts(output, trace)
        if not docs:
            return Score.undefined(f"no retrieved contexts to check the answer against (source: {source})")
        context = "\n\n".join(f"[{i + 1}] {_clip(t, self.max_context_chars)}" for i, (_, t) in enumerate(docs))
        return {"question": _question(example), "answer": answer, "context": context, "max_claims": self.max_claims}

    def schema(self, inputs: Mapping[str, Any]) -> type[BaseModel]:
        verdicts: Any = Literal["supported", "unsupported"]
        claim: Any = _model(
            "Claim",
            verdict=(verdicts, ...),
            claim=(str, Field(max_length=self.claim_chars)),
            **self._explanation_field(),
        )
        return _model("FaithfulnessVerdict", claims=(list[claim], Field(max_length=self.max_claims)))

    def interpret(self, verdict: Any, inputs: Mapping[str, Any]) -> Score:
        claims = [c.model_dump() for c in verdict.claims]
        if not claims:
            return Score.undefined("the judge found no factual claims in the answer", claims=[])
        supported = sum(1 for c in claims if c["verdict"] == "supported")
        return Score.ok(supported / len(claims), claims=claims, supported=supported, total=len(claims))


# --------------------------------------------------------------------------- answer relevance
_REL3 = {"relevant": 1.0, "partially_relevant": 0.5, "irrelevant": 0.0}


class AnswerRelevance(JudgeScorer):
    """Answer relevance: does the answer address the question?

    The judge gives one verdict: ``relevant`` → 1.0, ``partially_relevant`` → 0.5,
    ``irrelevant`` → 0.0 (an evasive or off-topic answer is irrelevant). Correctness is not judged here.

    Edge cases: no answer or an empty answer → undefined.
    """

    name = "answer_relevance"
    version = "1"
    system_template = (
        "You judge whether an ANSWER addresses the QUESTION it was given, regardless of whether it is correct. "
        'Verdict "relevant": it answers the question; "partially_relevant": it addresses only part of it or '
        'mostly talks about something else; "irrelevant": it does not address the question (off-topic or evasive).'
    )
    user_template = "QUESTION:\n{question}\n\nANSWER:\n{answer}"

    def inputs(self, example: Example, output: Any, trace: Trace | None) -> dict[str, Any] | Score:
        answer = _answer(output, trace)
        if answer is None or not answer.strip():
            return Score.undefined("no answer to judge (the output has no answer text)")
        return {"question": _question(example), "answer": answer}

    def schema(self, inputs: Mapping[str, Any]) -> type[BaseModel]:
        verdicts: Any = Literal["relevant", "partially_relevant", "irrelevant"]
        return _model("AnswerRelevanceVerdict", verdict=(verdicts, ...), **self._explanation_field())

    def interpret(self, verdict: Any, inputs: Mapping[str, Any]) -> Score:
        d = verdict.model_dump()
        return Score.ok(_REL3[d["verdict"]], verdict=d["verdict"], explanation=d.get("explanation"))


# -------------------------------------------------------------------------- context relevance
class ContextRelevance(JudgeScorer):
    """Context relevance: the share of retrieved documents relevant to the question.

    One judge call per example rates every retrieved document (the first ``max_documents``, in rank
    order) ``relevant`` (1) or ``irrelevant`` (0); ``value = mean`` of the document scores.
    ``details["documents"]`` keeps each document's rank, id, verdict and score.

    Edge cases: no retrieval / no documents with content → undefined.
    """

    name = "context_relevance"
    version = "1"
    system_template = (
        "You judge retrieved DOCUMENTS for a search QUESTION. For each document d1, d2, … give the verdict "
        '"relevant" when it contains information that helps answer the QUESTION, else "irrelevant".'
    )
    user_template = "QUESTION:\n{question}\n\nDOCUMENTS:\n{documents}"

    def __init__(self, judge: Any = None, *, max_documents: int = 20, **kw: Any) -> None:
        super().__init__(judge, **kw)
        self.max_documents = int(max_documents)

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "max_documents": self.max_documents}

    def inputs(self, example: Example, output: Any, trace: Trace | None) -> dict[str, Any] | Score:
        docs, source = _contexts(output, trace)
        if not docs:
            return Score.undefined(f"no retrieved documents to judge (source: {source})")
        docs = docs[: self.max_documents]
        text = "\n\n".join(f"d{i + 1}: {_clip(t, self.max_context_chars)}" for i, (_, t) in enumerate(docs))
        return {"question": _question(example), "documents": text, "_docs": docs}

    def schema_key(self, inputs: Mapping[str, Any]) -> Any:
        return len(inputs["_docs"])

    def schema(self, inputs: Mapping[str, Any]) -> type[BaseModel]:
        verdicts: Any = Literal["relevant", "irrelevant"]
        doc = _model("DocumentVerdict", verdict=(verdicts, ...), **self._explanation_field())
        return _model("ContextRelevanceVerdict", **{f"d{i + 1}": (doc, ...) for i in range(len(inputs["_docs"]))})

    def interpret(self, verdict: Any, inputs: Mapping[str, Any]) -> Score:
        d = verdict.model_dump()
        docs = []
        for i, (did, _) in enumerate(inputs["_docs"]):
            v = d[f"d{i + 1}"]
            docs.append({"rank": i, "id": did, "verdict": v["verdict"], "score": 1.0 if v["verdict"] == "relevant" else 0.0,
                         **({"explanation": v["explanation"]} if "explanation" in v else {})})  # fmt: skip
        return Score.ok(statistics.fmean(x["score"] for x in docs), documents=docs)


# -------------------------------------------------------------------------------- correctness
_CORRECT3 = {"correct": 1.0, "partially_correct": 0.5, "incorrect": 0.0}


class Correctness(JudgeScorer):
    """Correctness against the example's reference answer.

    One verdict: ``correct`` → 1.0 (same facts as the reference; wording may differ),
    ``partially_correct`` → 0.5 (some reference facts missing or one wrong detail),
    ``incorrect`` → 0.0 (contradicts the reference or misses its point).

    Edge cases: no reference → undefined; no answer or an empty answer → undefined.
    """

    name = "correctness"
    version = "1"
    system_template = (
        'You grade an ANSWER against a REFERENCE answer to the same QUESTION. Verdict "correct": it states the '
        'facts of the REFERENCE (wording may differ); "partially_correct": some facts are missing or one detail '
        'is wrong; "incorrect": it contradicts the REFERENCE or misses its point.'
    )
    user_template = "QUESTION:\n{question}\n\nREFERENCE:\n{reference}\n\nANSWER:\n{answer}"

    def inputs(self, example: Example, output: Any, trace: Trace | None) -> dict[str, Any] | Score:
        ref = example.reference
        if ref is None or (isinstance(ref, str) and not ref.strip()):
            return Score.undefined("the example has no reference answer")
        answer = _answer(output, trace)
        if answer is None or not answer.strip():
            return Score.undefined("no answer to grade (the output has no answer text)")
        return {
            "question": _question(example),
            "answer": answer,
            "reference": ref if isinstance(ref, str) else str(ref),
        }

    def schema(self, inputs: Mapping[str, Any]) -> type[BaseModel]:
        verdicts: Any = Literal["correct", "partially_correct", "incorrect"]
        return _model("CorrectnessVerdict", verdict=(verdicts, ...), **self._explanation_field())

    def interpret(self, verdict: Any, inputs: Mapping[str, Any]) -> Score:
        d = verdict.model_dump()
        return Score.ok(_CORRECT3[d["verdict"]], verdict=d["verdict"], explanation=d.get("explanation"))


# ------------------------------------------------------------------------------------- rubric
class Rubric(JudgeScorer):
    """A rubric / G-Eval-style judge from your own criteria.

    The judge reads the criteria (and optional evaluation steps) and gives an integer score on
    ``scale = (low, high)`` (an enum of the allowed integers, so a guided decoder can only produce a
    valid one). ``value = (score - low) / (high - low)`` in [0, 1]; the raw score is in
    ``details["raw_score"]``. With ``logprobs`` available the sequence log-probability is kept too.

    Edge cases: no answer → undefined; ``use_reference=True`` and no reference → undefined;
    ``use_contexts=True`` and no contexts → undefined.
    """

    name = "rubric"
    version = "1"
    system_template = (
        "You are an evaluator. Score the ANSWER on an integer scale from {low} to {high} "
        "({low} = worst, {high} = best) against these criteria:\n{criteria}{steps}"
    )
    user_template = "QUESTION:\n{question}\n\n{extra}ANSWER:\n{answer}"

    def __init__(
        self,
        criteria: str,
        judge: Any = None,
        *,
        name: str = "rubric",
        scale: tuple[int, int] = (1, 5),
        steps: Sequence[str] | None = None,
        use_reference: bool = False,
        use_contexts: bool = False,
        **kw: Any,
    ) -> None:
        if not criteria or not str(criteria).strip():
            raise ConfigError("rubric(criteria=…): the criteria text is empty; say what a good answer does")
        lo, hi = int(scale[0]), int(scale[1])
        if hi <= lo or hi - lo > 100:
            raise ConfigError(f"rubric(scale={scale!r}): need low < high and at most 101 levels")
        super().__init__(judge, name=name, **kw)
        self.criteria = str(criteria)
        self.low, self.high = lo, hi
        self.steps = list(steps or [])
        self.use_reference = use_reference
        self.use_contexts = use_contexts

    @property
    def params(self) -> dict[str, Any]:
        return {**super().params, "criteria": self.criteria, "scale": [self.low, self.high], "steps": self.steps,
                "use_reference": self.use_reference, "use_contexts": self.use_contexts}  # fmt: skip

    def inputs(self, example: Example, output: Any, trace: Trace | None) -> dict[str, Any] | Score:
        answer = _answer(output, trace)
        if answer is None or not answer.strip():
            return Score.undefined("no answer to score (the output has no answer text)")
        extra = ""
        if self.use_reference:
            if example.reference is None:
                return Score.undefined("the rubric uses the reference, and the example has none")
            extra += f"REFERENCE:\n{example.reference}\n\n"
        if self.use_contexts:
            docs, source = _contexts(output, trace)
            if not docs:
                return Score.undefined(f"the rubric uses retrieved contexts, and there are none (source: {source})")
            extra += "CONTEXT:\n" + "\n\n".join(_clip(t, self.max_context_chars) for _, t in docs) + "\n\n"
        steps = (
            ("\nEvaluation steps:\n" + "\n".join(f"{i + 1}. {s}" for i, s in enumerate(self.steps)))
            if self.steps
            else ""
        )
        return {"question": _question(example), "answer": answer, "extra": extra, "criteria": self.criteria,
                "steps": steps, "low": self.low, "high": self.high}  # fmt: skip

    def schema(self, inputs: Mapping[str, Any]) -> type[BaseModel]:
        levels: Any = Literal[tuple(range(self.low, self.high + 1))]  # type: ignore[valid-type]
        return _model("RubricVerdict", score=(levels, ...), **self._explanation_field())

    def interpret(self, verdict: Any, inputs: Mapping[str, Any]) -> Score:
        d = verdict.model_dump()
        raw = int(d["score"])
        return Score.ok((raw - self.low) / (self.high - self.low), raw_score=raw, explanation=d.get("explanation"))


# --------------------------------------------------------------------------------- factories
def faithfulness(judge: Any = None, **kw: Any) -> Faithfulness:
    """Claims of the answer supported by the retrieved contexts / total claims (see :class:`Faithfulness`)."""
    return Faithfulness(judge, **kw)


def answer_relevance(judge: Any = None, **kw: Any) -> AnswerRelevance:
    """Does the answer address the question: 1 / 0.5 / 0 (see :class:`AnswerRelevance`)."""
    return AnswerRelevance(judge, **kw)


def context_relevance(judge: Any = None, **kw: Any) -> ContextRelevance:
    """Mean per-document relevance of the retrieved contexts (see :class:`ContextRelevance`)."""
    return ContextRelevance(judge, **kw)


def correctness(judge: Any = None, **kw: Any) -> Correctness:
    """Answer graded against the reference: 1 / 0.5 / 0 (see :class:`Correctness`)."""
    return Correctness(judge, **kw)


def rubric(criteria: str, judge: Any = None, **kw: Any) -> Rubric:
    """A G-Eval-style integer score from your criteria, normalised to [0, 1] (see :class:`Rubric`)."""
    return Rubric(criteria, judge, **kw)


JUDGE_SCORERS = {
    "faithfulness": faithfulness,
    "answer_relevance": answer_relevance,
    "context_relevance": context_relevance,
    "correctness": correctness,
    "rubric": rubric,
}

__all__ = [
    "JUDGE_SCORERS",
    "AnswerRelevance",
    "ContextRelevance",
    "Correctness",
    "Faithfulness",
    "JudgeScorer",
    "Rubric",
    "answer_relevance",
    "context_relevance",
    "correctness",
    "estimate",
    "faithfulness",
    "rubric",
]
