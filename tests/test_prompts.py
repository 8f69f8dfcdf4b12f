"""The prompt registry: content-addressed versions, aliases with history, rendering in the three
formats (checked against LangChain's own rendering), LangChain and LlamaIndex conversion, and the
prompt version on spans: a pushed and aliased prompt used in a real LangChain chain puts
``ragtrail.prompt.*`` on the chain's LLM spans, and two eval runs with two prompt versions show them
in their comparison. The LLM is LangChain's fake chat model (scripted answers); everything else is real."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from ragtrail import semconv
from ragtrail.cli import app as cli_app
from ragtrail.prompts import PromptError, alias_history, get, push, set_alias, versions
from ragtrail.store import open_store

QA = "Answer from the context.\nContext: {context}\nQuestion: {question}"


@pytest.fixture
def store(store_path):  # type: ignore[no-untyped-def]
    s = open_store(store_path)
    yield s
    s.close()


def test_versions_are_content_addressed(store) -> None:  # type: ignore[no-untyped-def]
    v1 = push("qa", QA, store=store)
    again = push("qa", QA, store=store)
    assert (v1.ref, v1.created, again.ref, again.created) == ("qa:v1", True, "qa:v1", False)
    v2 = push("qa", QA, model="gpt-4o-mini", params={"temperature": 0}, store=store)
    v3 = push("qa", QA + "\nBe brief.", store=store)
    assert (v2.ref, v3.ref) == ("qa:v2", "qa:v3")  # model and params are part of a version
    assert push("qa", QA, model="gpt-4o-mini", params={"temperature": 0}, store=store).ref == "qa:v2"
    assert [v.ref for v in versions("qa", store=store)] == ["qa:v1", "qa:v2", "qa:v3"]
    assert get("qa", store=store).ref == "qa:v3" and get("qa:v2", store=store).params == {"temperature": 0}
    with pytest.raises(PromptError, match=r"qa has versions v1, v2, v3 and aliases latest"):
        get("qa:v7", store=store)


def test_aliases_with_history_and_compare_and_swap(store, store_path) -> None:  # type: ignore[no-untyped-def]
    push("qa", QA, store=store, aliases=["production"])
    push("qa", QA + "\nBe brief.", store=store)
    assert get("qa:production", store=store).ref == "qa:v1"
    assert set_alias("qa:v2", "production", store=store, expected="v1", by="ci") == "qa:v1"
    with pytest.raises(PromptError, match=r"moved meanwhile"):
        set_alias("qa:v1", "production", store=store, expected="v1")
    assert get("qa:production", store=store).ref == "qa:v2"
    assert [(h["previous"], h["version"]) for h in alias_history("qa", store=store)] == [
        (None, "qa:v1"),
        ("qa:v1", "qa:v2"),
    ]
    assert store.query("SELECT name FROM aliases") == [("prompt:qa",)]  # the one alias table, namespaced
    runner = CliRunner()
    res = runner.invoke(cli_app, ["prompts", "show", "qa:production", "--store", store_path])
    assert res.exit_code == 0 and "qa:v2" in res.output and "Be brief." in res.output
    res = runner.invoke(cli_app, ["prompts", "alias", "qa:v1", "production", "--store", store_path])
    assert res.exit_code == 0 and "(was qa:v2)" in res.output


def test_render_matches_langchain_for_each_format(store) -> None:  # type: ignore[no-untyped-def]
    f = push("qa", QA, store=store)
    assert f.variables == ["context", "question"]
    text = f.render(context="Paris is in France.", question="Where is Paris?")
    lc = f.to_langchain().invoke({"context": "Paris is in France.", "question": "Where is Paris?"}).to_messages()
    assert lc[0].content == text and text.endswith("Question: Where is Paris?")
    with pytest.raises(PromptError, match=r"qa:v1 needs the variable\(s\) question"):
        f.render(context="x")

    m = push("m", "Hi {{name}}! {{#docs}}[{{id}}] {{{text}}}\n{{/docs}}{{^docs}}no documents{{/docs}}", format="mustache",
             store=store)  # fmt: skip
    variables = {"name": "<Ann>", "docs": [{"id": 1, "text": "a<b"}, {"id": 2, "text": "c"}]}
    assert m.render(**variables) == "Hi &lt;Ann&gt;! [1] a<b\n[2] c\n"
    assert m.to_langchain().invoke(variables).to_messages()[0].content == m.render(**variables)
    assert m.render(name="x", docs=[]) == "Hi x! no documents"

    c = push("chat", [{"role": "system", "content": "You answer in a {tone} tone."},
                      {"role": "placeholder", "content": "{history}"},
                      {"role": "user", "content": "{question}"}], format="chat", store=store)  # fmt: skip
    out = c.render(tone="dry", history=[{"role": "user", "content": "hi"}], question="why?")
    assert out == [{"role": "system", "content": "You answer in a dry tone."}, {"role": "user", "content": "hi"},
                   {"role": "user", "content": "why?"}]  # fmt: skip
    msgs = c.to_langchain().invoke({"tone": "dry", "history": [("human", "hi")], "question": "why?"}).to_messages()
    assert [(type(x).__name__, x.content) for x in msgs] == [
        ("SystemMessage", "You answer in a dry tone."), ("HumanMessage", "hi"), ("HumanMessage", "why?")]  # fmt: skip


def test_bad_templates_are_refused(store) -> None:  # type: ignore[no-untyped-def]
    from ragtrail import ConfigError

    with pytest.raises(ConfigError, match=r"the placeholder \{0\} is not a plain variable name"):
        push("x", "a {0}", store=store)
    with pytest.raises(ConfigError, match=r"not a valid f-string"):
        push("x", "a {unclosed", store=store)
    with pytest.raises(ConfigError, match=r"never closed"):
        push("x", "{{#a}} open", format="mustache", store=store)
    with pytest.raises(ConfigError, match=r"partials and delimiter changes are not supported"):
        push("x", "{{> header}} hi", format="mustache", store=store)
    with pytest.raises(ConfigError, match=r"format must be one of"):
        push("x", "a", format="jinja2", store=store)
    with pytest.raises(ConfigError, match=r"message 0 needs a role"):
        push("x", [{"role": "wizard", "content": "hi"}], format="chat", store=store)


def test_llama_index_conversion_carries_the_version(store) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("llama_index.core")
    f = push("qa", QA, store=store)
    tpl = f.to_llama_index()
    assert tpl.format(context="c", question="q") == f.render(context="c", question="q")
    assert tpl.metadata[semconv.PROMPT_NAME] == "qa" and tpl.metadata[semconv.PROMPT_VERSION] == 1
    c = push("chat", [{"role": "system", "content": "Be {tone}."}, {"role": "user", "content": "{q}"}], format="chat",
             store=store)  # fmt: skip
    msgs = c.to_llama_index().format_messages(tone="brief", q="why?")
    assert [(str(m.role.value), m.content) for m in msgs] == [("system", "Be brief."), ("user", "why?")]
    with pytest.raises(PromptError, match=r"mustache"):
        push("m", "{{a}}", format="mustache", store=store).to_llama_index()


def _prompt_attrs(span) -> tuple:  # type: ignore[no-untyped-def, type-arg]
    a = span.attributes
    return a.get(semconv.PROMPT_NAME), a.get(semconv.PROMPT_VERSION)


def test_llm_spans_of_a_langchain_chain_carry_the_prompt_version(traced) -> None:  # type: ignore[no-untyped-def]
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.runnables import RunnableLambda, RunnablePassthrough

    from ragtrail.connectors.langchain import CallbackHandler

    push("qa", QA, aliases=["production"])
    push("qa", QA + "\nAnswer in one word.")
    llm = FakeListChatModel(responses=["Paris", "France", "Paris"])  # fake answers; the chain is real LangChain

    def build(ref: str):  # type: ignore[no-untyped-def]
        retrieve = RunnableLambda(lambda q: "Paris is the capital of France.", name="retrieve")
        return (
            {"context": retrieve, "question": RunnablePassthrough()} | get(ref).to_langchain() | llm | StrOutputParser()
        )

    handler = CallbackHandler()
    assert build("qa:production").invoke("Where is Paris?", config={"callbacks": [handler]}) == "Paris"
    set_alias("qa:v2", "production")
    # the LLM nested one level deeper (inside its own sub-chain) inherits the version too
    nested = (
        {"context": RunnableLambda(lambda q: "ctx"), "question": RunnablePassthrough()}
        | get("qa:production").to_langchain()
        | (llm | StrOutputParser())
    )
    assert nested.invoke("Capital?", config={"callbacks": [handler]}) == "France"
    spans = traced.spans()
    llm_spans = [s for s in spans if s.attributes.get(semconv.SPAN_KIND) == semconv.LLM]
    assert [_prompt_attrs(s) for s in llm_spans] == [("qa", 1), ("qa", 2)]
    prompt_spans = [s for s in spans if s.attributes.get(semconv.LANGCHAIN_RUN_TYPE) == "prompt"]
    assert [_prompt_attrs(s) for s in prompt_spans] == [("qa", 1), ("qa", 2)]
    assert llm_spans[1].attributes[semconv.PROMPT_DIGEST] == get("qa:v2").digest
    others = [s for s in spans if s not in llm_spans and s not in prompt_spans]
    assert others and all(semconv.PROMPT_NAME not in s.attributes for s in others)  # retriever, parser, chains
    # spans are in the store too: filter traces by prompt version
    df = traced.client().spans_df()
    tagged = df[df.attributes.map(lambda a: a.get(semconv.PROMPT_VERSION) == 2)]
    assert set(tagged.kind) == {semconv.LLM, semconv.CHAIN}


def test_render_records_a_span_with_the_version(traced) -> None:  # type: ignore[no-untyped-def]
    p = push("qa", QA, aliases=["production"])
    get("qa:production").render(context="c", question="q")
    (span,) = traced.by_name("prompt qa")
    assert _prompt_attrs(span) == ("qa", 1) and span.attributes[semconv.PROMPT_DIGEST] == p.digest
    assert "Question: q" in span.attributes[semconv.OUTPUT_VALUE]


def test_two_runs_with_two_prompt_versions_show_them_in_the_comparison(traced) -> None:  # type: ignore[no-untyped-def]
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser

    from ragtrail.connectors.langchain import CallbackHandler
    from ragtrail.evals import Dataset, Evaluation, scorers
    from ragtrail.evals._compare import compare

    push("qa", QA)
    push("qa", QA + "\nAnswer in one word.")
    ds = Dataset.from_records([{"id": f"e{i}", "input": f"q{i}", "reference": "Paris"} for i in range(4)], name="geo")
    handler = CallbackHandler()

    def pipeline(question: str, config: dict) -> str:  # type: ignore[type-arg]
        llm = FakeListChatModel(responses=[config["answer"]])  # fake answers per config
        chain = config["prompt"].to_langchain() | llm | StrOutputParser()
        return chain.invoke({"context": "Paris is the capital.", "question": question}, config={"callbacks": [handler]})

    ev = Evaluation("geo-qa", ds, pipeline, [scorers.exact_match()], progress=False)
    a = ev.run(config={"prompt": get("qa:v1"), "answer": "It is Paris, in France."})
    b = ev.run(config={"prompt": get("qa:v2"), "answer": "Paris"})
    cmp = compare(a.store, a, b)
    assert (cmp.a.config["prompt"], cmp.b.config["prompt"]) == ("qa:v1", "qa:v2")
    assert cmp["exact_match"].mean_b > cmp["exact_match"].mean_a
    # and each run's traces carry its prompt version on the LLM spans
    spans = traced.spans()
    by_trace = {}
    for s in spans:
        if s.attributes.get(semconv.SPAN_KIND) == semconv.LLM:
            by_trace[format(s.context.trace_id, "032x")] = s.attributes[semconv.PROMPT_VERSION]
    assert {by_trace[r["trace_id"]] for r in a.examples()} == {1}
    assert {by_trace[r["trace_id"]] for r in b.examples()} == {2}


def test_a_team_shares_prompts_through_postgresql(pg_url) -> None:  # type: ignore[no-untyped-def]
    alice, bob = open_store(pg_url), open_store(pg_url)  # two clients of one server
    push("qa", QA, store=alice, aliases=["production"], by="alice")
    assert get("qa:production", store=bob).render(context="c", question="q").endswith("Question: q")
    push("qa", QA + "\nBe brief.", store=bob)
    set_alias("qa:v2", "production", store=bob, expected="v1", by="bob")
    assert get("qa:production", store=alice).ref == "qa:v2"
    assert [h["set_by"] for h in alias_history("qa", store=alice)] == ["alice", "bob"]
