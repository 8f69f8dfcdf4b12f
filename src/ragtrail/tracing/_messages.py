"""The one converter and the one reader of chat messages: the GenAI conventions' parts schema.

Every connector hands its framework's messages (LangChain ``BaseMessage`` objects, tuples or dicts,
LlamaIndex ``ChatMessage``, OpenAI-style dicts and SDK objects, vLLM / transformers chat dicts) to
``record_messages`` or ``message_attributes`` (in :mod:`ragtrail.tracing._spans`, which apply the content
switch, masking and byte cap to what this module converts); every reader (the web UI, the OpenInference
translation, ``SpanRecord``) goes through :func:`read_messages`. The shape written is the convention's::

    {"role": "system|user|assistant|tool",
     "parts": [{"type": "text", "content": …}
               | {"type": "tool_call", "id": …, "name": …, "arguments": …}
               | {"type": "tool_call_response", "id": …, "response": …}
               | {"type": "reasoning", "content": …}],
     "finish_reason": …}                     # output messages only

System messages of the input go to ``gen_ai.system_instructions`` (a list of parts), not into
``gen_ai.input.messages``. With content capture off the messages are still recorded, with their
structure (roles, part types, tool names and call ids, finish reasons) and without their content.
Nothing here imports a framework: objects are read by duck typing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ragtrail import semconv
from ragtrail._log import logger

__all__ = [
    "message_text",
    "read_input_messages",
    "read_messages",
    "read_output_messages",
    "to_input_messages",
    "to_message",
    "to_output_messages",
]

_ROLES = {
    "human": "user", "user": "user", "ai": "assistant", "assistant": "assistant", "chatbot": "assistant",
    "model": "assistant", "system": "system", "developer": "system", "tool": "tool", "function": "tool",
}  # fmt: skip
_CONTENT_KEYS = ("content", "arguments", "response", "uri", "data")
"""Keys of a part that hold content (dropped when capture is off)."""
UNKNOWN_FINISH_REASON = "unknown"
"""``finish_reason`` of an output message whose framework reported none (the schema requires one)."""


def role(raw: Any, default: str = "user") -> str:
    """``raw`` (a LangChain message type such as ``AIMessageChunk``, a LlamaIndex ``MessageRole``, an
    OpenAI role…) as one of system | user | assistant | tool."""
    r = getattr(raw, "value", raw)
    if not isinstance(r, str) or not r:
        return default
    key = r.lower()
    for suffix in ("messagechunk", "message"):
        if key.endswith(suffix) and key != suffix:
            key = key[: -len(suffix)]
            break
    return _ROLES.get(key, default)


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _arguments(raw: Any) -> Any:
    """Tool-call arguments as structured data where they are JSON text (OpenAI sends a string)."""
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return _plain(raw)


def _plain(v: Any) -> Any:
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    dump = getattr(v, "model_dump", None)
    if callable(dump):
        try:
            return _plain(dump())
        except Exception:
            pass
    return str(v)


def _tool_call(c: Any) -> dict[str, Any]:
    """One tool call of any framework (LangChain ``{name, args, id}``, OpenAI ``{id, function: {name,
    arguments}}`` dicts or SDK objects, an already converted part) as a ``tool_call`` part."""
    fn = _get(c, "function")
    if fn is not None:
        name, args = _get(fn, "name"), _get(fn, "arguments")
    else:
        name = _get(c, "name")
        args = _get(c, "args") if _get(c, "args") is not None else _get(c, "arguments", _get(c, "input"))
    cid = _get(c, "id")
    return {"type": semconv.PART_TOOL_CALL, "id": None if cid is None else str(cid),
            "name": None if name is None else str(name), "arguments": _arguments(args)}  # fmt: skip


def _block(b: Any) -> dict[str, Any] | None:
    """One content block (OpenAI / LangChain / Anthropic dicts, LlamaIndex blocks, convention parts)."""
    if isinstance(b, str):
        return {"type": semconv.PART_TEXT, "content": b}
    t = _get(b, "type") or _get(b, "block_type")
    t = getattr(t, "value", t)
    if t in ("text", "input_text", "output_text"):
        text = _get(b, "content") if _get(b, "text") is None else _get(b, "text")
        return {"type": semconv.PART_TEXT, "content": "" if text is None else str(text)}
    if t in ("reasoning", "thinking"):
        text = _get(b, "content") or _get(b, "thinking") or _get(b, "reasoning") or _get(b, "summary")
        return {"type": semconv.PART_REASONING, "content": text if isinstance(text, str) else _plain(text)}
    if t in ("tool_call", "tool_use", "function_call"):
        return _tool_call(b)
    if t in ("tool_call_response", "tool_result"):
        resp = _get(b, "response", _get(b, "content"))
        return {"type": semconv.PART_TOOL_CALL_RESPONSE, "id": _get(b, "id", _get(b, "tool_use_id")),
                "response": _plain(resp)}  # fmt: skip
    if t in ("image_url", "image", "uri"):
        url = _get(b, "image_url", _get(b, "url", _get(b, "uri")))
        url = _get(url, "url", url)
        return {"type": "uri", "modality": "image", "uri": None if url is None else str(url)}
    if t is None:
        return None
    return {"type": str(t)}


def _content_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": semconv.PART_TEXT, "content": content}] if content else []
    if isinstance(content, (list, tuple)):
        return [p for p in (_block(b) for b in content) if p is not None]
    return [{"type": semconv.PART_TEXT, "content": json.dumps(_plain(content), default=str)}]


_MESSAGE_FIELDS = ("role", "type", "content", "blocks", "tool_calls", "tool_call_id", "name", "additional_kwargs",
                   "reasoning_content", "finish_reason", "parts")  # fmt: skip


def _fields(m: Any) -> Mapping[str, Any]:
    """A message object's fields as a mapping. Pydantic models (LangChain, LlamaIndex, the OpenAI SDK) keep
    their fields in ``__dict__``: reading that avoids pydantic's slow ``__getattr__`` for the many fields a
    given framework lacks. A ``content`` property (LlamaIndex ``ChatMessage``) is read when no field has it."""
    if isinstance(m, Mapping):
        return m
    d = getattr(m, "__dict__", None)
    if isinstance(d, dict):
        if "content" not in d and "blocks" not in d:
            return {**d, "content": getattr(m, "content", None)}
        return d
    return {k: getattr(m, k, None) for k in _MESSAGE_FIELDS}


def _message(m: Any, default_role: str) -> dict[str, Any]:
    """One message of any supported framework in the parts schema (``finish_reason`` kept if given)."""
    if isinstance(m, str):
        return {"role": default_role, "parts": _content_parts(m)}
    if isinstance(m, (tuple, list)) and len(m) == 2 and isinstance(m[0], str):  # LangChain ("human", "hi")
        return {"role": role(m[0], default_role), "parts": _content_parts(m[1])}
    m = _fields(m)
    r = _get(m, "role")
    if r is None or role(r, "") == "":
        r = _get(m, "type", r)  # LangChain BaseMessage.type (ChatMessage has a role too)
    msg_role = role(r, default_role)
    kwargs = _get(m, "additional_kwargs") or {}
    parts: list[dict[str, Any]] = []
    if isinstance(_get(m, "parts"), list):  # already in the parts schema
        parts = [p for p in (_block(b) for b in _get(m, "parts")) if p is not None]
    else:
        reasoning = _get(m, "reasoning_content") or _get(kwargs, "reasoning_content")
        if isinstance(reasoning, str) and reasoning:
            parts.append({"type": semconv.PART_REASONING, "content": reasoning})
        blocks = _get(m, "blocks")
        content = _get(m, "content") if not isinstance(blocks, list) else blocks
        call_id = _get(m, "tool_call_id") or _get(kwargs, "tool_call_id")
        if msg_role == "tool":
            resp = content if isinstance(content, str) or content is None else _plain(content)
            if isinstance(blocks, list):
                resp = "".join(str(p.get("content", "")) for p in _content_parts(blocks) if p["type"] == "text")
            parts.append({"type": semconv.PART_TOOL_CALL_RESPONSE, "id": None if call_id is None else str(call_id),
                          "response": resp})  # fmt: skip
        else:
            parts.extend(_content_parts(content))
            calls = _get(m, "tool_calls") or _get(kwargs, "tool_calls") or ()
            seen = {p.get("id") for p in parts if p["type"] == semconv.PART_TOOL_CALL}
            for c in calls:
                tc = _tool_call(c)
                if tc["id"] is None or tc["id"] not in seen:
                    parts.append(tc)
    out: dict[str, Any] = {"role": msg_role, "parts": parts}
    name = _get(m, "name")
    if isinstance(name, str) and name and msg_role in ("user", "assistant"):
        out["name"] = name
    fr = _get(m, "finish_reason")
    if fr:
        out["finish_reason"] = str(fr)
    return out


def _strip(part: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in part.items() if k not in _CONTENT_KEYS}


def _structure_only(msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**m, "parts": [_strip(p) for p in m["parts"]]} for m in msgs]


def to_message(m: Any) -> dict[str, Any]:
    """One framework message in the parts schema (``{role, parts[, name, finish_reason]}``)."""
    return _message(m, "user")


def to_input_messages(messages: Any, *, content: bool = True) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(system_instructions, input_messages)`` of a framework's chat input: system messages become the
    parts of the first; the rest messages with roles user | assistant | tool. ``content=False`` keeps
    the structure only."""
    if messages is None:
        return [], []
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Iterable):
        messages = [messages]
    system: list[dict[str, Any]] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        msg = _message(m, "user")
        msg.pop("finish_reason", None)
        if msg["role"] == "system":
            system.extend(msg["parts"])
        else:
            out.append(msg)
    if not content:
        system, out = [_strip(p) for p in system], _structure_only(out)
    return system, out


def to_output_messages(
    messages: Any, finish_reasons: Sequence[Any] | None = None, *, content: bool = True
) -> list[dict[str, Any]]:
    """Output messages (one per choice) in the parts schema, role assistant unless stated, each with a
    ``finish_reason`` (``finish_reasons[i]`` where given, else the message's own, else ``unknown``)."""
    if messages is None:
        return []
    if isinstance(messages, (str, Mapping)) or not isinstance(messages, Iterable):
        messages = [messages]
    out = []
    for i, m in enumerate(messages):
        msg = _message(m, "assistant")
        fr = finish_reasons[i] if finish_reasons is not None and i < len(finish_reasons) else None
        msg["finish_reason"] = str(fr) if fr else msg.get("finish_reason") or UNKNOWN_FINISH_REASON
        out.append(msg)
    return _structure_only(out) if not content else out


# ------------------------------------------------------------------------------------------ reader
def _loads(raw: Any) -> Any:
    if isinstance(raw, (bytes, str)):
        try:
            return json.loads(raw)
        except ValueError:
            return None
    return raw


def read_messages(raw: Any, *, output: bool = False) -> list[dict[str, Any]]:
    """Messages stored under ``gen_ai.input.messages`` / ``gen_ai.output.messages`` (JSON text or
    parsed), in the parts schema, whatever shape a writer used (parts, or a flat ``{role, content}``
    from another GenAI instrumentation). Never raises; ``[]`` for anything unreadable."""
    data = _loads(raw)
    if not isinstance(data, list):
        return []
    out = []
    for m in data:
        try:
            if isinstance(m, Mapping):
                out.append(_message(m, "assistant" if output else "user"))
        except Exception:
            logger.debug("ragtrail: unreadable message", exc_info=True)
    return out


def read_input_messages(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A span's input messages, its system instructions first as a ``system`` message."""
    out = read_messages(attributes.get(semconv.GEN_AI_INPUT_MESSAGES))
    system = _loads(attributes.get(semconv.GEN_AI_SYSTEM_INSTRUCTIONS))
    if isinstance(system, list):
        parts = [p for p in (_block(b) for b in system) if p is not None]
        if parts:
            out.insert(0, {"role": "system", "parts": parts})
    return out


def read_output_messages(attributes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A span's output messages."""
    return read_messages(attributes.get(semconv.GEN_AI_OUTPUT_MESSAGES), output=True)


def message_text(msg: Mapping[str, Any]) -> str | None:
    """The text of a message in the parts schema (its text parts joined; a tool answer's response);
    ``None`` when it has none (content not captured, tool calls only)."""
    texts = []
    for p in msg.get("parts") or ():
        if p.get("type") == semconv.PART_TEXT and isinstance(p.get("content"), str):
            texts.append(p["content"])
        elif p.get("type") == semconv.PART_TOOL_CALL_RESPONSE and p.get("response") is not None:
            r = p["response"]
            texts.append(r if isinstance(r, str) else json.dumps(r, default=str))
    return "".join(texts) if texts else None
