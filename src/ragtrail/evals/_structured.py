"""Structured output for LLM judges: the JSON schema a model is asked for, JSON salvaged from a
free-text reply, what a LangChain chat model supports, and reading a reply (text, usage, refusal,
logprob) whatever the decoding method was."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ragtrail._log import logger

OPENAI_COMPATIBLE = {"ChatOpenAI", "AzureChatOpenAI", "ChatVLLM", "ChatDeepSeek", "ChatXAI", "ChatFireworks"}
"""Chat model classes that speak the OpenAI API (the schema can go in the request)."""

REFUSAL = re.compile(
    r"^\s*(i\s*(am|'m)\s*(sorry|unable|not able)|i\s*(can(no|')t|cannot|won't)|as an ai|sorry,)", re.IGNORECASE
)
"""The start of a reply that refuses instead of answering."""


# ----------------------------------------------------------------------------------- schemas
_schema_cache: dict[type[BaseModel], dict[str, Any]] = {}


def json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    """The JSON schema sent to the model: refs inlined, titles dropped, objects closed."""
    hit = _schema_cache.get(model)
    if hit is None:
        hit = _schema_cache[model] = _json_schema_of(model)
    return hit


def _json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema()
    defs = raw.pop("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                name = str(node["$ref"]).rsplit("/", 1)[-1]
                return walk(dict(defs[name]))
            out = {k: walk(v) for k, v in node.items() if k not in ("title", "description", "default")}
            if out.get("type") == "object":
                out.setdefault("additionalProperties", False)
                if "properties" in out:
                    out["required"] = list(out["properties"])
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(raw)  # type: ignore[no-any-return]


def parse_json_text(text: str) -> Any:
    """JSON from a model's reply: the whole text, else a fenced block, else the first balanced object."""
    s = text.strip()
    if not s:
        raise ValueError("empty reply")
    try:
        return json.loads(s)
    except ValueError:
        pass
    m = re.search(r"```(?:json)?\s*(.*?)```", s, re.DOTALL)
    if m:
        try:
            return json.loads(m.group(1))
        except ValueError:
            pass
    start = s.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(s)):
            c = s[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    try:
                        return json.loads(s[start : i + 1])
                    except ValueError:
                        break
        start = s.find("{", start + 1)
    raise ValueError("no JSON object found in the reply")


# ----------------------------------------------------------------------------------- models
def detect_capabilities(model: Any) -> dict[str, bool]:
    """What a LangChain chat model can do: native structured output (JSON schema), tool calling, logprobs."""
    cls = type(model)
    structured = False
    tools = False
    try:
        from langchain_core.language_models import BaseChatModel

        wso = getattr(cls, "with_structured_output", None)
        if wso is not None and wso is not BaseChatModel.with_structured_output:
            structured = "json_schema" in str(inspect.signature(wso))
        bt = getattr(cls, "bind_tools", None)
        tools = bt is not None and bt is not BaseChatModel.bind_tools
    except Exception:
        logger.debug("ragtrail: capability detection failed for %s", cls.__name__, exc_info=True)
    if cls.__name__ in OPENAI_COMPATIBLE:
        structured = True
    fields = getattr(cls, "model_fields", {})
    return {"structured_output": structured, "tool_calling": tools, "logprobs": "logprobs" in fields}


def model_identity(model: Any) -> tuple[str, str]:
    provider, name = "", ""
    try:
        ls = model._get_ls_params()
        provider = str(ls.get("ls_provider") or "")
        name = str(ls.get("ls_model_name") or "")
    except Exception:
        pass
    for attr in ("model_name", "model", "model_id"):
        if not name:
            v = getattr(model, attr, None)
            if isinstance(v, str) and v:
                name = v
    return provider or type(model).__name__.lower(), name or type(model).__name__


def to_messages(msgs: Sequence[Mapping[str, str]]) -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    out: list[Any] = []
    for m in msgs:
        cls = {"system": SystemMessage, "assistant": AIMessage}.get(m["role"], HumanMessage)
        out.append(cls(content=m["content"]))
    return out


def convo_dicts(convo: Sequence[Any]) -> list[dict[str, str]]:
    return [{"role": getattr(m, "type", "user"), "content": str(getattr(m, "content", m))} for m in convo]


def ai_message(text: str) -> Any:
    from langchain_core.messages import AIMessage

    return AIMessage(content=text)


def human_message(text: str) -> Any:
    from langchain_core.messages import HumanMessage

    return HumanMessage(content=text)


def repair_prompt(error: str, schema: dict[str, Any]) -> str:
    return (
        f"Your reply could not be used: {error}. Reply again with only one JSON object that follows this "
        f"schema exactly:\n{json.dumps(schema, separators=(',', ':'))}"
    )


def read_output(out: Any, method: str) -> tuple[str, dict[str, int], str | None, float | None]:
    """(raw text, usage, refusal, sequence logprob) from what the runnable returned."""
    msg = out
    if isinstance(out, dict) and "raw" in out:  # with_structured_output(include_raw=True)
        msg = out["raw"]
    text = ""
    if method == "tool":
        calls = getattr(msg, "tool_calls", None) or []
        if calls:
            text = json.dumps(calls[0].get("args", {}), ensure_ascii=False)
    if not text:
        content = getattr(msg, "content", msg)
        if isinstance(content, list):  # content blocks
            parts = [c.get("text", "") if isinstance(c, dict) else str(c) for c in content]
            content = "".join(parts)
        text = "" if content is None else str(content)
    usage: dict[str, int] = {}
    um = getattr(msg, "usage_metadata", None)
    if um:
        usage = {"input_tokens": int(um.get("input_tokens") or 0), "output_tokens": int(um.get("output_tokens") or 0)}
    refusal = None
    ak = getattr(msg, "additional_kwargs", None) or {}
    if ak.get("refusal"):
        refusal = str(ak["refusal"])
    lp: float | None = None
    rm = getattr(msg, "response_metadata", None) or {}
    content_lp = (rm.get("logprobs") or {}).get("content") if isinstance(rm.get("logprobs"), dict) else None
    if content_lp:
        try:
            lp = float(sum(float(t["logprob"]) for t in content_lp if t.get("logprob") is not None))
        except (TypeError, ValueError, KeyError):
            lp = None
    return text, usage, refusal, lp


__all__ = [
    "OPENAI_COMPATIBLE",
    "REFUSAL",
    "ai_message",
    "convo_dicts",
    "detect_capabilities",
    "human_message",
    "json_schema_of",
    "model_identity",
    "parse_json_text",
    "read_output",
    "repair_prompt",
    "to_messages",
]
