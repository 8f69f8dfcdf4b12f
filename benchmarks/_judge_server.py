"""A real vLLM OpenAI-compatible server on CPU with a tiny random byte-level Llama, for judge tests and
the judge throughput benchmark (recipe: shared/recipes/vllm-on-cpu.md).

Reuses ``tests/_tiny_model.py`` when another part of the test suite provides it; otherwise builds the
model here. The model's weights are random: guided decoding is what makes its output valid JSON.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

_SENTENCES = [
    '{"verdict":"yes"}', '{"verdict":"no"}', '{"claims":[{"verdict":"supported","claim":"x"}]}',
    '{"documents":[{"verdict":"relevant"},{"verdict":"irrelevant"}]}', '{"score":3}',
    "The capital of France is Paris. Water boils at 100 degrees Celsius at sea level.",
    "Question: what is the answer? Answer: the answer is forty-two. Context: a document about numbers.",
    "You are a strict evaluator. Reply with JSON only, following the schema.",
]  # fmt: skip


def build_tiny_model(directory: str | os.PathLike[str]) -> str:
    """Build (once) a tiny random Llama with a byte-level BPE tokenizer in ``directory``; returns the path."""
    d = Path(directory)
    if (d / "config.json").exists() and (d / "tokenizer.json").exists():
        return str(d)
    try:  # the suite's shared builder, when present
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests import _tiny_model  # type: ignore[import-not-found]

        for name in ("build_tiny_llama", "build_tiny_model"):
            fn = getattr(_tiny_model, name, None)
            if callable(fn):
                try:
                    out = fn(str(d), max_position_embeddings=4096)
                except TypeError:
                    continue
                return str(out or d)
    except Exception:
        pass
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    d.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=["<unk>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(_SENTENCES * 20, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    fast.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>\n{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}"
    )
    fast.save_pretrained(str(d))
    import torch

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(fast), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=4096, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(str(d))
    return str(d)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VLLMServer:
    """``python -m vllm.entrypoints.openai.api_server`` in its own process group; SIGTERM to the group on stop."""

    def __init__(self, model_dir: str, *, served_name: str = "tiny", guided: bool = True, max_num_seqs: int = 16):
        self.model_dir = model_dir
        self.served_name = served_name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.guided = guided
        self.max_num_seqs = max_num_seqs
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = os.path.join(tempfile.gettempdir(), f"ragtrail-judge-vllm-{self.port}.log")

    def start(self, timeout_s: float = 300.0) -> VLLMServer:
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", self.model_dir,
            "--served-model-name", self.served_name, "--host", "127.0.0.1", "--port", str(self.port),
            "--dtype", "float32", "--max-model-len", "4096", "--enforce-eager", "--gpu-memory-utilization", "0.2",
            "--max-num-seqs", str(self.max_num_seqs), "--seed", "0",
            "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
        ]  # fmt: skip
        env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the server's lifetime
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"vLLM server exited with {self.proc.returncode}; log: {self.log_path}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except Exception:
                pass
            time.sleep(1.0)
        self.stop()
        raise RuntimeError(f"vLLM server did not start within {timeout_s}s; log: {self.log_path}\n{self.log_tail()}")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return r.read().decode()

    def chat_requests(self) -> float:
        """``http_requests_total`` summed over the /v1/chat/completions handler."""
        total = 0.0
        for line in self.metrics().splitlines():
            if line.startswith("http_requests_total{") and '"/v1/chat/completions"' in line:
                total += float(line.rsplit(" ", 1)[1])
        return total

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
