"""A tiny, randomly initialised, byte-level Llama built locally (no download), for real-engine tests.

Follows ``recipes/vllm-on-cpu.md``: a byte-level BPE tokenizer (any text, JSON included, encodes), a
chat template, and a 2-layer Llama with head_dim 64 (what vLLM's CPU attention kernels support). The
text it writes is nonsense; tokens, timings and engine metrics are real.

Use it from any test module::

    from tests._tiny_model import build_tiny_llama, tiny_llama_dir  # noqa: F401  (the fixture)

    def test_x(tiny_llama_dir):            # built once per test session, in a temp dir
        ...

or call ``build_tiny_llama(path)`` directly (idempotent: an existing build in ``path`` is reused).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Retrieval augmented generation answers questions from documents.",
    "A trace is a tree of spans; each span has a start, an end and attributes.",
    "Tokens, latency and cost are recorded for every model call.",
    '{"verdict": "yes", "score": 0.9, "reason": "the answer is supported by the context"}',
    '{"verdict": "no", "score": 0.1, "reason": "not supported"}',
    '{"name": "value", "items": [1, 2, 3], "ok": true, "none": null}',
    "Question: what is the capital of France? Answer: Paris.",
    "user: hello there\nassistant: hi, how can I help you today?",
    "0123456789 +-*/=()[]{}<>:;,.!?'\" \t\n",
]

_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)

_MARKER = "ragtrail_tiny_llama.json"


def build_tiny_llama(directory: str | os.PathLike[str], *, max_position_embeddings: int = 4096) -> str:
    """Build (or reuse) the tiny byte-level Llama in ``directory``; returns the directory as a string.

    Tokenizer: byte-level BPE, vocab about 400, specials ``<unk> <s> </s>`` (ids 0, 1, 2), with a chat
    template. Model: LlamaForCausalLM, hidden 128, 2 layers, 2 heads (head_dim 64), float32, seed 0.
    """
    path = Path(directory)
    if (path / _MARKER).exists() and (path / "config.json").exists():
        return str(path)
    path.mkdir(parents=True, exist_ok=True)

    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    fast.chat_template = _CHAT_TEMPLATE
    fast.model_max_length = max_position_embeddings
    fast.save_pretrained(str(path))

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(str(path))
    (path / _MARKER).write_text('{"built_by": "tests/_tiny_model.py"}\n', encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny byte-level Llama, built once per test session (import this fixture into a test module).

    Several modules importing the fixture share one build: it lives at a fixed place under the session's
    base temp dir and :func:`build_tiny_llama` reuses an existing build. ``$RAGTRAIL_TINY_LLAMA_DIR``
    points at a directory to build into (or reuse) across sessions.
    """
    env = os.environ.get("RAGTRAIL_TINY_LLAMA_DIR")
    return build_tiny_llama(env or (tmp_path_factory.getbasetemp() / "tiny_llama"))


__all__ = ["build_tiny_llama", "tiny_llama_dir"]
