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

import statistics
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from ragtrail._exceptions import ConfigError
from ragtrail.evals._judge_base import JudgeScorer, _answer, _clip, _contexts, _model, _question, estimate
from ragtrail.evals._types import Example, Score

if TYPE_CHECKING:
    from ragtrail.tracing._model import Trace


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
