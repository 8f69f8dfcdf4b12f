"""Fake LLM *answers* for the LangChain connector tests and benchmark; everything else is real LangChain.

``ScriptedChat`` is a real ``BaseChatModel`` whose replies are scripted: it can answer with tool calls,
reports ``usage_metadata`` (like OpenAI/Anthropic chat models do) and streams word by word, putting the
usage on the last chunk as providers do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.retrievers import BaseRetriever


class ScriptedChat(BaseChatModel):
    """A chat model whose answers are scripted (fake answers only); reports usage like a provider."""

    script: list[AIMessage]
    model_name: str = "gpt-4o-mini"
    provider: str = "openai"
    input_tokens: int = 11
    output_tokens: int = 7
    cached_tokens: int = 0
    position: int = 0

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = self.provider
        params["ls_model_name"] = self.model_name
        params["ls_temperature"] = 0.2
        params["ls_max_tokens"] = 256
        return params

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> Any:  # the script decides the calls
        return self

    def _next(self) -> AIMessage:
        msg = self.script[self.position % len(self.script)]
        self.position += 1
        return msg

    def _usage(self) -> dict[str, Any]:
        u: dict[str, Any] = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        if self.cached_tokens:
            u["input_token_details"] = {"cache_read": self.cached_tokens}
        return u

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        src = self._next()
        reason = "tool_calls" if src.tool_calls else "stop"
        msg = AIMessage(
            content=src.content,
            tool_calls=src.tool_calls,
            usage_metadata=self._usage(),  # type: ignore[arg-type]
            response_metadata={"model_name": self.model_name + "-2024-07-18", "finish_reason": reason},
        )
        return ChatResult(generations=[ChatGeneration(message=msg, generation_info={"finish_reason": reason})])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        src = self._next()
        if src.tool_calls:
            calls = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"], "index": i}
                     for i, c in enumerate(src.tool_calls)]  # fmt: skip
            yield ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=calls))  # type: ignore[arg-type]
        words = str(src.content).split(" ") if src.content else []
        for i, w in enumerate(words):
            yield ChatGenerationChunk(message=AIMessageChunk(content=w if i == 0 else " " + w))
        reason = "tool_calls" if src.tool_calls else "stop"
        yield ChatGenerationChunk(
            message=AIMessageChunk(
                content="",
                usage_metadata=self._usage(),  # type: ignore[arg-type]
                response_metadata={"model_name": self.model_name + "-2024-07-18", "finish_reason": reason},
            )
        )


class FixedRetriever(BaseRetriever):
    """A real LangChain retriever over a fixed in-memory corpus (word-overlap ranking, scores in metadata)."""

    docs: list[Document]
    k: int = 4

    def _get_relevant_documents(self, query: str, *, run_manager: Any = None) -> list[Document]:
        words = set(query.lower().split())
        scored = []
        for d in self.docs:
            overlap = len(words & set(d.page_content.lower().split()))
            scored.append((overlap / (1 + len(words)), d))
        scored.sort(key=lambda t: -t[0])
        out = []
        for score, d in scored[: self.k]:
            out.append(Document(page_content=d.page_content, id=d.id, metadata={**d.metadata, "score": score}))
        return out


def corpus(n: int = 8) -> list[Document]:
    return [
        Document(page_content=f"Document {i} says that topic {i % 3} matters for retrieval.", id=f"doc-{i}",
                 metadata={"source": f"s{i}"})
        for i in range(n)
    ]  # fmt: skip
