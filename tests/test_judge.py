"""LLM judges: verdict semantics, failure statuses, repair, trials, budget, spans.

The only fake here is the LLM's answers: ``ScriptedJudge`` is a LangChain chat model (a real
``BaseChatModel`` subclass driven through LangChain's own invoke path) whose replies come from a
script, and LangChain's ``FakeListChatModel`` is used where a fixed list of replies is enough. Stores
are real SQLite files (and the real PostgreSQL server in the cache tests).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from ragtrail import semconv
from ragtrail._exceptions import ConfigError, JudgeError
from ragtrail.evals import Example, Judge, JudgeCache, scorers
from ragtrail.evals._judge import json_schema_of, parse_json_text
from ragtrail.evals._judge_scorers import estimate


class ScriptedJudge(BaseChatModel):
    """A fake chat model whose reply to each request comes from ``script(messages)``.

    Every reply carries usage metadata (100 input / 20 output tokens) like a provider's would.
    ``calls`` is shared by copies of the model (the Judge pins sampling parameters on a copy).
    """

    script: Any
    calls: list[dict[str, Any]] = Field(default_factory=list)
    model_name: str = "scripted-judge"
    temperature: float | None = None
    seed: int | None = None
    max_tokens: int | None = None

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        from ragtrail.tracing import is_suppressed

        self.calls.append(
            {"messages": [m.content for m in messages], "suppressed": is_suppressed(), "temperature": self.temperature,
             "seed": self.seed}
        )  # fmt: skip
        out = self.script(messages)
        msg = out if isinstance(out, AIMessage) else AIMessage(
            content=out, usage_metadata={"input_tokens": 100, "output_tokens": 20, "total_tokens": 120}
        )  # fmt: skip
        return ChatResult(generations=[ChatGeneration(message=msg)])


def scripted(replies: Callable[[list[BaseMessage]], Any] | str | list[str], **kw: Any) -> ScriptedJudge:
    if isinstance(replies, str):
        text = replies
        return ScriptedJudge(script=lambda m: text, **kw)
    if isinstance(replies, list):
        it = iter(replies)
        return ScriptedJudge(script=lambda m: next(it), **kw)
    return ScriptedJudge(script=replies, **kw)


EX = Example(id="e1", input="Where is the Eiffel Tower?", reference="In Paris, France.")
OUT = {"answer": "The Eiffel Tower is in Paris. It is 500 m tall.",
       "contexts": [{"id": "d1", "content": "The Eiffel Tower is a tower in Paris."}, "Paris is in France.",
                    {"id": "d3", "content": "Bananas are yellow."}]}  # fmt: skip


def J(model: Any, **kw: Any) -> Judge:
    kw.setdefault("cache", False)
    return Judge(model, **kw)


# ------------------------------------------------------------------------------ semantics
def test_faithfulness_is_supported_claims_over_total_in_one_call() -> None:
    reply = json.dumps({"claims": [
        {"verdict": "supported", "claim": "The tower is in Paris.", "explanation": "d1 says so"},
        {"verdict": "unsupported", "claim": "It is 500 m tall.", "explanation": "no context gives a height"},
        {"verdict": "supported", "claim": "Paris is in France.", "explanation": "context 2"},
    ]})  # fmt: skip
    model = scripted(reply)
    s = scorers.faithfulness(judge=J(model)).score(EX, OUT, None)
    assert s.status == "ok" and s.value == pytest.approx(2 / 3)
    assert [c["verdict"] for c in s.details["claims"]] == ["supported", "unsupported", "supported"]
    assert (s.details["supported"], s.details["total"]) == (2, 3)
    assert len(model.calls) == 1  # one judge call for all claims
    prompt = "\n".join(model.calls[0]["messages"])
    assert "Bananas are yellow." in prompt and OUT["answer"] in prompt
    assert s.details["judge"]["raw"] == [reply]


def test_answer_relevance_correctness_rubric_values() -> None:
    ar = scorers.answer_relevance(judge=J(scripted('{"verdict":"partially_relevant","explanation":"half"}')))
    assert ar.score(EX, OUT, None).value == 0.5
    co = scorers.correctness(judge=J(scripted('{"verdict":"incorrect","explanation":"wrong city"}')))
    s = co.score(EX, "It is in Rome.", None)
    assert (s.status, s.value, s.details["verdict"]) == ("ok", 0.0, "incorrect")
    ru = scorers.rubric("Is the answer concise?", judge=J(scripted('{"score":4,"explanation":"short"}')), scale=(1, 5))
    s = ru.score(EX, OUT, None)
    assert s.value == pytest.approx((4 - 1) / (5 - 1)) and s.details["raw_score"] == 4


def test_context_relevance_keeps_document_scores_and_means_them() -> None:
    reply = '{"d1":{"verdict":"relevant"},"d2":{"verdict":"relevant"},"d3":{"verdict":"irrelevant"}}'
    model = scripted(reply)
    s = scorers.context_relevance(judge=J(model), explain=False).score(EX, OUT, None)
    assert s.value == pytest.approx(2 / 3)
    assert [(d["rank"], d["id"], d["score"]) for d in s.details["documents"]] == [
        (0, "d1", 1.0),
        (1, None, 1.0),
        (2, "d3", 0.0),
    ]
    assert len(model.calls) == 1


def test_context_relevance_reads_documents_from_the_trace(traced: Any) -> None:
    import ragtrail
    from ragtrail.tracing import SpanRecord, Trace, record_documents

    with ragtrail.span("rag", kind="CHAIN"):
        with ragtrail.span("retrieve", kind="RETRIEVER") as sp:
            record_documents(sp, [{"id": "a", "content": "Paris facts"}, {"id": "b", "content": "Banana facts"}])
    trace = Trace([SpanRecord.from_readable(s) for s in traced.spans()])
    model = scripted('{"d1":{"verdict":"relevant"},"d2":{"verdict":"irrelevant"}}')
    s = scorers.context_relevance(judge=J(model), explain=False).score(EX, "Paris.", trace)
    assert s.value == 0.5 and [d["id"] for d in s.details["documents"]] == ["a", "b"]


# ------------------------------------------------------------------------------ failures
@pytest.mark.parametrize(
    ("reply", "status", "reason_part"),
    [
        ("The answer looks faithful to me, I'd say 0.9.", "error", "not JSON"),
        ('{"claims":[{"verdict":"supported","claim":"The tow', "error", "not JSON"),
        ("I'm sorry, but I can't help with evaluating this.", "error", "refusal"),
        ('{"claims":[{"verdict":"maybe","claim":"x","explanation":"y"}]}', "error", "does not match the schema"),
        ("", "error", "empty reply"),
        ('{"claims": []}', "undefined", "no factual claims"),
    ],
)
def test_unusable_replies_never_become_numbers(reply: str, status: str, reason_part: str) -> None:
    model = scripted(reply)
    s = scorers.faithfulness(judge=J(model, max_repairs=1)).score(EX, OUT, None)
    assert s.status == status and s.value is None
    assert reason_part in (s.reason or "")
    assert s.details["judge"]["raw"] == [reply] * len(model.calls)  # raw text of every attempt is kept
    assert len(model.calls) == (2 if status == "error" else 1)  # one repair attempt for invalid replies


def test_provider_refusal_field_is_an_error() -> None:
    model = scripted(lambda m: AIMessage(content="", additional_kwargs={"refusal": "I can't judge this content."}))
    s = scorers.answer_relevance(judge=J(model)).score(EX, OUT, None)
    assert s.status == "error" and "refused" in (s.reason or "") and s.value is None
    assert len(model.calls) == 1  # a refusal is not retried


def test_repair_retry_recovers_and_keeps_both_raw_replies() -> None:
    model = scripted(["Verdict: relevant!", '{"verdict":"relevant","explanation":"on topic"}'])
    s = scorers.answer_relevance(judge=J(model, max_repairs=2)).score(EX, OUT, None)
    assert s.status == "ok" and s.value == 1.0
    assert s.details["judge"]["raw"] == ["Verdict: relevant!", '{"verdict":"relevant","explanation":"on topic"}']
    assert s.details["judge"]["attempts"] == 2
    assert "could not be used" in model.calls[1]["messages"][-1]  # the repair prompt shows the error


def test_nothing_to_judge_is_undefined_without_a_call() -> None:
    model = scripted('{"verdict":"correct"}')
    j = J(model)
    assert scorers.faithfulness(judge=j).score(EX, {"answer": "x"}, None).status == "undefined"
    assert scorers.faithfulness(judge=j).score(EX, {"answer": "", "contexts": ["c"]}, None).status == "undefined"
    assert scorers.context_relevance(judge=j).score(EX, {"answer": "x", "contexts": []}, None).status == "undefined"
    s = scorers.correctness(judge=j).score(Example(id="x", input="q"), "a", None)
    assert s.status == "undefined" and "reference" in (s.reason or "")
    assert model.calls == []


def test_judge_accepts_a_bare_chat_model_and_explains_a_missing_one(tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("RAGTRAIL_STORE", str(tmp_path / "s.db"))
    fake = FakeListChatModel(responses=['{"verdict":"relevant","explanation":"ok"}'])
    s = scorers.answer_relevance(judge=fake).score(EX, OUT, None)
    assert s.status == "ok" and s.value == 1.0
    with pytest.raises(JudgeError, match="judge=Judge"):
        scorers.answer_relevance().score(EX, OUT, None)
    with pytest.raises(ConfigError):
        Judge(fake, method="nonsense")
    with pytest.raises(ConfigError, match="empty"):
        scorers.rubric("  ", judge=fake)


# ------------------------------------------------------------------------------ schema, params
def test_schema_puts_the_verdict_first_bounds_free_text_and_explain_false_drops_it() -> None:
    sc = scorers.answer_relevance(judge=J(scripted("{}")))
    with_expl = json_schema_of(sc.schema({}))
    assert list(with_expl["properties"]) == ["verdict", "explanation"]
    assert with_expl["properties"]["explanation"]["maxLength"] == 300
    assert with_expl["additionalProperties"] is False and with_expl["required"] == ["verdict", "explanation"]
    bare = json_schema_of(scorers.answer_relevance(judge=J(scripted("{}")), explain=False).schema({}))
    assert list(bare["properties"]) == ["verdict"] and set(bare["properties"]["verdict"]["enum"]) == {
        "relevant", "partially_relevant", "irrelevant"}  # fmt: skip
    faith = json_schema_of(scorers.faithfulness(judge=J(scripted("{}")), max_claims=7).schema({}))
    assert faith["properties"]["claims"]["maxItems"] == 7
    item = faith["properties"]["claims"]["items"]
    assert list(item["properties"])[0] == "verdict" and item["properties"]["claim"]["maxLength"] == 200
    rub = json_schema_of(scorers.rubric("c", judge=J(scripted("{}")), scale=(0, 3), explain=False).schema({}))
    assert rub["properties"]["score"]["enum"] == [0, 1, 2, 3]


def test_temperature_and_seed_are_pinned_and_recorded() -> None:
    model = scripted('{"verdict":"relevant"}')
    s = scorers.answer_relevance(judge=J(model), explain=False).score(EX, OUT, None)
    assert model.calls[0]["temperature"] == 0.0 and model.calls[0]["seed"] == 0
    assert s.details["judge"]["params"] == {"temperature": 0.0, "seed": 0, "max_tokens": 1024}


def test_parse_json_text_finds_fenced_and_embedded_objects() -> None:
    assert parse_json_text('```json\n{"a": 1}\n```') == {"a": 1}
    assert parse_json_text('Here: {"a": {"b": "}"}} done') == {"a": {"b": "}"}}
    with pytest.raises(ValueError):
        parse_json_text('{"a": ')


# ------------------------------------------------------------------------------ trials
def test_trials_report_mean_variance_and_self_consistency() -> None:
    replies = {0: "relevant", 1: "irrelevant", 2: "relevant", 3: "partially_relevant"}

    model = ScriptedJudge(script=None)
    model.script = lambda m: json.dumps({"verdict": replies[model.calls[-1]["seed"]]})
    s = scorers.answer_relevance(judge=J(model, temperature=0.7), explain=False, trials=4).score(EX, OUT, None)
    values = [1.0, 0.0, 1.0, 0.5]
    mean = sum(values) / 4
    assert s.status == "ok" and s.value == pytest.approx(mean)
    assert s.details["variance"] == pytest.approx(sum((v - mean) ** 2 for v in values) / 4)
    assert s.details["self_consistency"] == pytest.approx(2 / 4)
    assert sorted(c["seed"] for c in model.calls) == [0, 1, 2, 3]  # seed + trial index
    assert [t["value"] for t in s.details["trials"]] == values


def test_trials_all_failing_is_an_error() -> None:
    s = scorers.answer_relevance(judge=J(scripted("nope"), max_repairs=0), trials=3).score(EX, OUT, None)
    assert s.status == "error" and s.value is None and s.details["n_ok"] == 0


# ------------------------------------------------------------------------------ spans, cost
def test_each_judge_call_is_one_evaluator_span_with_usage_and_suppressed_connectors(traced: Any) -> None:
    model = scripted('{"verdict":"relevant"}')
    judge = J(model, prices={"input": 1.0, "output": 2.0})
    s = scorers.answer_relevance(judge=judge, explain=False).score(EX, OUT, None)
    spans = [x for x in traced.spans() if x.attributes.get(semconv.SPAN_KIND) == semconv.EVALUATOR]
    assert len(spans) == 1
    a = spans[0].attributes
    assert a[semconv.EVAL_SCORER] == "answer_relevance"
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == 100 and a[semconv.GEN_AI_USAGE_OUTPUT_TOKENS] == 20
    assert a[semconv.COST_USD] == pytest.approx((100 * 1.0 + 20 * 2.0) / 1e6)
    assert a[semconv.GEN_AI_REQUEST_TEMPERATURE] == 0.0 and a[semconv.EVAL_JUDGE_CACHE_HIT] is False
    assert s.details["cost_usd"] == pytest.approx(140 / 1e6)
    assert model.calls[0]["suppressed"] is True
    assert len(traced.spans()) == 1  # nothing else was traced


def test_max_cost_stops_cleanly_and_a_resume_completes_from_the_cache(store_path: str) -> None:
    model = scripted('{"verdict":"relevant"}')
    # worst case per call: ~input estimate + 50 output tokens at $1/M in and out
    judge = Judge(model, cache=store_path, prices={"input": 1.0, "output": 1.0}, max_tokens=50, max_concurrency=1)
    per_call = judge.cost_of(judge.estimate_tokens(
        judge._with_instructions(scorers.answer_relevance(judge=judge, explain=False).messages(
            {"question": EX.input, "answer": OUT["answer"]}), {}),
    ) + 60, 50)  # fmt: skip
    assert per_call is not None
    judge.max_cost = per_call * 2.5
    sc = scorers.answer_relevance(judge=judge, explain=False)
    exs = [Example(id=str(i), input=f"question {i}?") for i in range(5)]
    first = [sc.score(e, OUT, None) for e in exs]
    assert [s.status for s in first].count("ok") >= 2
    errors = [s for s in first if s.status == "error"]
    assert errors and all("max_cost" in (s.reason or "") and s.value is None for s in errors)
    n_calls = len(model.calls)
    assert n_calls == [s.status for s in first].count("ok")
    # resume with a bigger budget: only the skipped examples are called
    judge2 = Judge(scripted('{"verdict":"relevant"}'), cache=store_path, prices={"input": 1.0, "output": 1.0},
                   max_tokens=50, max_cost=1.0)  # fmt: skip
    sc2 = scorers.answer_relevance(judge=judge2, explain=False)
    second = [sc2.score(e, OUT, None) for e in exs]
    assert all(s.status == "ok" for s in second)
    assert len(judge2.model.calls) == len(errors)
    assert judge2.cache_hits == n_calls


def test_max_cost_without_a_known_price_is_refused() -> None:
    with pytest.raises(JudgeError, match="prices="):
        Judge(scripted("{}"), cache=False, max_cost=1.0)


def test_dry_run_estimate_counts_calls_tokens_cost_and_cache_hits(store_path: str) -> None:
    judge = Judge(scripted('{"verdict":"relevant"}'), cache=store_path, prices={"input": 2.0, "output": 4.0},
                  max_tokens=10)  # fmt: skip
    sc = scorers.answer_relevance(judge=judge, explain=False, trials=2)
    items = [(Example(id=str(i), input=f"q{i}"), OUT) for i in range(3)]
    est = estimate([sc, scorers.token_f1()], items)
    assert (est.calls, est.cached, est.output_tokens) == (6, 0, 60)
    assert est.input_tokens > 0 and est.cost_usd == pytest.approx((est.input_tokens * 2 + 60 * 4) / 1e6)
    assert judge.model.calls == []  # a dry run calls nothing
    sc.score(*items[0], None)
    est2 = sc.estimate(items)
    assert (est2.calls, est2.cached) == (6, 2)
    assert sc.estimate_cost(items[0][0], OUT) == 0.0


# ------------------------------------------------------------------------------ methods
def test_capabilities_pick_the_best_method() -> None:
    from langchain_openai import ChatOpenAI

    oa = Judge(ChatOpenAI(model="m", base_url="http://127.0.0.1:9/v1", api_key="x"), cache=False)
    assert oa.method == "json_schema" and oa.capabilities == {
        "structured_output": True,
        "tool_calling": True,
        "logprobs": True,
    }
    assert J(scripted("{}")).method == "prompt"
    assert (
        Judge(ChatOpenAI(model="m", base_url="http://127.0.0.1:9/v1", api_key="x"), cache=False, method="guided").method
        == "guided"
    )
    with pytest.raises(JudgeError):
        J(scripted("{}"), method="json_schema")


def test_judge_cache_object_reports_hits(store_path: str) -> None:
    cache = JudgeCache(store_path)
    sc = scorers.answer_relevance(judge=Judge(scripted('{"verdict":"relevant"}'), cache=cache), explain=False)
    sc.score(EX, OUT, None)
    sc.score(EX, OUT, None)
    assert cache.stats.as_dict() | {} == {"hits": 1, "misses": 1, "writes": 1, "errors": 0}
    assert len(cache) == 1


# ------------------------------------------------------------------------------ in the harness
def test_judge_scorers_in_an_evaluation_run_and_an_identical_rerun_makes_no_calls(traced: Any) -> None:
    from ragtrail.evals import Dataset, Evaluation

    ds = Dataset.from_records(
        [{"id": f"e{i}", "input": f"Where is landmark {i}?", "reference": "Paris"} for i in range(4)], name="judge-ds"
    )

    def pipeline(q: str) -> dict[str, Any]:
        return {"answer": f"{q} It is in Paris.", "contexts": ["Landmarks are in Paris.", "Bananas are yellow."]}

    def make(model: ScriptedJudge) -> list[Any]:
        judge = Judge(model, cache=traced.store_path, prices={"input": 1.0, "output": 1.0})
        return [scorers.faithfulness(judge=judge, explain=False), scorers.context_relevance(judge=judge, explain=False)]

    def reply(messages: list[BaseMessage]) -> str:
        if "DOCUMENTS" in str(messages[-1].content):
            return '{"d1":{"verdict":"relevant"},"d2":{"verdict":"irrelevant"}}'
        return '{"claims":[{"verdict":"supported","claim":"in Paris"},{"verdict":"unsupported","claim":"landmark"}]}'

    m1 = ScriptedJudge(script=reply)
    run1 = Evaluation("judged", dataset=ds, pipeline=pipeline, scorers=make(m1), store=traced.store_path).run()
    df = run1.results_df()
    assert set(df["status"]) == {"ok"} and len(df) == 8
    assert list(df[df["scorer"] == "faithfulness"]["score"]) == [0.5] * 4
    assert list(df[df["scorer"] == "context_relevance"]["score"]) == [0.5] * 4
    assert len(m1.calls) == 8
    assert run1.lineage["judge_models"] == ["scriptedjudge/scripted-judge"]  # provider from ls_params, then name
    assert run1.summary["judge_cost_usd"] == pytest.approx(8 * 120 / 1e6)  # 100 in + 20 out tokens per call at $1/M
    evaluator = [s for s in traced.spans() if s.attributes.get(semconv.SPAN_KIND) == semconv.EVALUATOR]
    assert len(evaluator) == 8 and {s.attributes[semconv.EVAL_SCORER] for s in evaluator} == {
        "faithfulness",
        "context_relevance",
    }
    m2 = ScriptedJudge(script=reply)
    run2 = Evaluation("judged", dataset=ds, pipeline=pipeline, scorers=make(m2), store=traced.store_path).run()
    assert m2.calls == [] and list(run2.results_df()["score"]) == list(df["score"])


def test_judge_from_a_yaml_style_spec() -> None:
    j = Judge.coerce({"model": "openai:tiny", "base_url": "http://127.0.0.1:9/v1", "api_key": "x", "temperature": 0.2,
                      "seed": 7, "method": "guided", "model_id": "vllm/tiny"})  # fmt: skip
    assert (j.model_id, j.method, j.temperature, j.seed) == ("vllm/tiny", "guided", 0.2, 7)
    assert type(j.model).__name__ == "ChatOpenAI"
    with pytest.raises(JudgeError, match="cannot build"):
        Judge.coerce("no-such-provider:model")


class ToolCallingScripted(ScriptedJudge):
    """A scripted fake chat model that supports tool calling: it answers with a tool call whose
    arguments are the scripted JSON (what a provider's forced function call returns)."""

    def bind_tools(self, tools: Any, *, tool_choice: Any = None, **kw: Any) -> Any:
        self.calls.append({"bound_tools": tools, "tool_choice": tool_choice})
        return self.bind(tools=tools, tool_choice=tool_choice)

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        text = self.script(messages)
        msg = AIMessage(
            content="", tool_calls=[{"name": "AnswerRelevanceVerdict", "args": json.loads(text), "id": "c1"}]
        )
        return ChatResult(generations=[ChatGeneration(message=msg)])


def test_tool_calling_models_get_a_forced_tool_call() -> None:
    model = ToolCallingScripted(script=lambda m: '{"verdict":"irrelevant"}')
    judge = J(model)
    assert judge.method == "tool"
    s = scorers.answer_relevance(judge=judge, explain=False).score(EX, OUT, None)
    assert s.status == "ok" and s.value == 0.0 and s.details["judge"]["method"] == "tool"
    bound = model.calls[0]
    assert bound["tool_choice"] == "AnswerRelevanceVerdict"
    assert bound["bound_tools"][0]["function"]["parameters"]["properties"]["verdict"]["enum"]
