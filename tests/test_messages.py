"""The one message converter (ragtrail.tracing._messages): framework messages → the GenAI parts schema."""

from __future__ import annotations

import json

import pytest

from ragtrail import semconv
from ragtrail.tracing import message_attributes, message_text, read_input_messages, read_messages
from ragtrail.tracing._messages import role, to_input_messages, to_output_messages


@pytest.mark.parametrize(
    ("raw", "want"),
    [("human", "user"), ("ai", "assistant"), ("AIMessageChunk", "assistant"), ("HumanMessageChunk", "user"),
     ("ToolMessageChunk", "tool"), ("SystemMessageChunk", "system"), ("developer", "system"), ("function", "tool"),
     ("chatbot", "assistant"), ("model", "assistant"), ("tool", "tool"), ("assistant", "assistant")],
)  # fmt: skip
def test_roles_are_normalised(raw: str, want: str) -> None:
    assert role(raw) == want


def test_langchain_messages_to_parts() -> None:
    from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage

    system, msgs = to_input_messages(
        [
            SystemMessage("be brief"),
            HumanMessage("population of Paris?"),
            AIMessage("", tool_calls=[{"name": "lookup", "args": {"city": "Paris"}, "id": "c1"}]),
            ToolMessage("2.1 million", tool_call_id="c1"),
            ("human", "thanks"),
        ]
    )
    assert system == [{"type": "text", "content": "be brief"}]
    assert msgs == [
        {"role": "user", "parts": [{"type": "text", "content": "population of Paris?"}]},
        {"role": "assistant", "parts": [{"type": "tool_call", "id": "c1", "name": "lookup",
                                         "arguments": {"city": "Paris"}}]},
        {"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "2.1 million"}]},
        {"role": "user", "parts": [{"type": "text", "content": "thanks"}]},
    ]  # fmt: skip
    chunk = AIMessageChunk(content="hi", additional_kwargs={"reasoning_content": "think"})
    (out,) = to_output_messages([chunk], ["stop"])
    assert out == {"role": "assistant", "finish_reason": "stop",
                   "parts": [{"type": "reasoning", "content": "think"}, {"type": "text", "content": "hi"}]}  # fmt: skip


def test_openai_dicts_and_llama_index_messages() -> None:
    from llama_index.core.llms import ChatMessage

    system, msgs = to_input_messages(
        [
            {"role": "developer", "content": [{"type": "text", "text": "rules"}]},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]},
            {"role": "tool", "tool_call_id": "x", "content": "ok"},
            ChatMessage(role="user", content="hello"),
            ChatMessage(role="system", content="more rules"),
        ]
    )  # fmt: skip
    assert system == [{"type": "text", "content": "rules"}, {"type": "text", "content": "more rules"}]
    assert msgs[0]["parts"] == [{"type": "tool_call", "id": "x", "name": "f", "arguments": {"a": 1}}]
    assert msgs[1] == {"role": "tool", "parts": [{"type": "tool_call_response", "id": "x", "response": "ok"}]}
    assert msgs[2] == {"role": "user", "parts": [{"type": "text", "content": "hello"}]}
    assert to_output_messages(["done"])[0]["finish_reason"] == "unknown"  # the schema requires one


def test_capture_off_keeps_structure_and_drops_content() -> None:
    attrs = message_attributes(
        [{"role": "system", "content": "secret rules"}, {"role": "user", "content": "my question"}],
        [
            {
                "role": "assistant",
                "content": "x",
                "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{}"}}],
            }
        ],
        finish_reasons=["tool_calls"],
        content=False,
    )
    assert json.loads(attrs[semconv.GEN_AI_SYSTEM_INSTRUCTIONS]) == [{"type": "text"}]
    assert json.loads(attrs[semconv.GEN_AI_INPUT_MESSAGES]) == [{"role": "user", "parts": [{"type": "text"}]}]
    assert json.loads(attrs[semconv.GEN_AI_OUTPUT_MESSAGES]) == [
        {"role": "assistant", "finish_reason": "tool_calls",
         "parts": [{"type": "text"}, {"type": "tool_call", "id": "c", "name": "f"}]}
    ]  # fmt: skip
    assert "secret" not in json.dumps(attrs) and "question" not in json.dumps(attrs)


def test_the_reader_reads_parts_and_older_flat_messages() -> None:
    parts = json.dumps(
        [{"role": "user", "parts": [{"type": "text", "content": "a"}, {"type": "text", "content": "b"}]}]
    )
    flat = json.dumps([{"role": "human", "content": "c"}])
    assert [message_text(m) for m in read_messages(parts)] == ["ab"]
    assert read_messages(flat) == [{"role": "user", "parts": [{"type": "text", "content": "c"}]}]
    assert read_messages("not json") == [] and read_messages(None) == []
    both = read_input_messages({semconv.GEN_AI_SYSTEM_INSTRUCTIONS: json.dumps([{"type": "text", "content": "s"}]),
                                semconv.GEN_AI_INPUT_MESSAGES: parts})  # fmt: skip
    assert [m["role"] for m in both] == ["system", "user"]
