"""A small extractive "chat model" for offline demos, implemented as a real LangChain chat model.

It answers from the prompt: the sentence of the context that shares the most (IDF-weighted) content
words with the question. It reports ``usage_metadata`` (word-piece counts from a simple regex
tokenizer) and streams word by word, so its calls are real LLM spans with token counts and time to
first token. No network, no weights; deterministic.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

MODEL_NAME = "ragtrail-extractive-v1"
_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"[a-z0-9]+(?:[.,+][a-z0-9]+)*")
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'])")
_STOP = frozenset(
    "a an and are as at be by can do does for from how i if in is it its my of on or the to what when "
    "which who why will with you your this that these those there their they was were has have long "
    "many much me we our us not no yes".split()
)


def count_tokens(text: str) -> int:
    """Number of word-piece tokens (words and punctuation marks)."""
    return len(_TOKEN.findall(text))


def _content_words(text: str) -> list[str]:
    out = []
    for w in _WORD.findall(text.lower()):
        if w in _STOP:
            continue
        if len(w) > 4 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]
        out.append(w)
    return out


def _split_prompt(text: str) -> tuple[str, str]:
    """(question, context) from a prompt with 'Question:' and 'Context:' parts (else last line, rest)."""
    q_match = re.search(r"question\s*:\s*(.+?)(?:\n\s*\n|\n\s*answer\s*:|$)", text, re.I | re.S)
    c_match = re.search(r"context\s*:\s*(.+?)(?:\n\s*question\s*:|$)", text, re.I | re.S)
    if q_match:
        question = q_match.group(1).strip()
        context = c_match.group(1).strip() if c_match else text.replace(q_match.group(0), " ")
        return question, context
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return "", ""
    return lines[-1], "\n".join(lines[:-1])


def extract_answer(question: str, context: str) -> str:
    """The context sentence that best answers ``question`` ("I don't know." when nothing overlaps)."""
    sentences = [s.strip() for block in context.splitlines() for s in _SENT.split(block) if s.strip()]
    sentences = [re.sub(r"^\[[^\]]*\]\s*", "", s) for s in sentences]  # drop "[doc-id]" prefixes
    full = [s for s in sentences if len(s.split()) >= 4]  # headings are not answers
    sentences = full or sentences
    if not sentences:
        return "I don't know."
    docs = [set(_content_words(s)) for s in sentences]
    df = Counter(w for d in docs for w in d)
    n = len(docs)
    q = set(_content_words(question))
    best, best_score = None, 0.0
    for sent, words in zip(sentences, docs, strict=False):
        score = sum(math.log(1 + n / df[w]) for w in q & words)
        score /= 1.0 + 0.02 * len(words)  # prefer focused sentences
        if score > best_score:
            best, best_score = sent, score
    return best if best is not None else "I don't know."


class ExtractiveChatModel(BaseChatModel):
    """Answers with the context sentence that best matches the question. Deterministic and offline."""

    model_name: str = MODEL_NAME

    @property
    def _llm_type(self) -> str:
        return "ragtrail-extractive"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> Any:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "ragtrail"
        params["ls_model_name"] = self.model_name
        return params

    def _answer(self, messages: list[BaseMessage]) -> tuple[str, UsageMetadata]:
        prompt = "\n".join(m.content if isinstance(m.content, str) else str(m.content) for m in messages)
        question, context = _split_prompt(prompt)
        answer = extract_answer(question, context)
        inp, out = count_tokens(prompt), count_tokens(answer)
        return answer, UsageMetadata(input_tokens=inp, output_tokens=out, total_tokens=inp + out)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        answer, usage = self._answer(messages)
        msg = AIMessage(
            content=answer,
            usage_metadata=usage,
            response_metadata={"model_name": self.model_name, "finish_reason": "stop"},
        )
        return ChatResult(generations=[ChatGeneration(message=msg, generation_info={"finish_reason": "stop"})])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        answer, usage = self._answer(messages)
        pieces = re.findall(r"\S+\s*", answer) or [answer]
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            chunk = ChatGenerationChunk(
                message=AIMessageChunk(
                    content=piece,
                    usage_metadata=usage if last else None,
                    response_metadata={"model_name": self.model_name, "finish_reason": "stop"} if last else {},
                )
            )
            if run_manager is not None:
                run_manager.on_llm_new_token(piece, chunk=chunk)
            yield chunk
