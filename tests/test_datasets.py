"""Datasets: loaders (records, JSONL, CSV, pandas, BEIR SciFact), content-hash versions, push/load on
SQLite and PostgreSQL, diffs, and errors that name file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtrail import Client
from ragtrail._exceptions import DatasetError
from ragtrail.evals import Dataset, load_dataset
from ragtrail.store import open_store

SCIFACT = Path("/work/shared/data/scifact")

RECORDS = [
    {"id": "q1", "input": "What is BM25?", "reference": "a ranking function", "relevant": {"d1": 2, "d2": 1}},
    {"id": "q2", "input": "Who wrote trec_eval?", "reference": "NIST", "contexts": ["c1"], "topic": "ir"},
]


def test_from_records_keeps_fields_and_moves_extra_keys_to_metadata() -> None:
    ds = Dataset.from_records(RECORDS, name="qa")
    assert len(ds) == 2 and ds.ids == ["q1", "q2"]
    assert ds["q1"].relevant == {"d1": 2.0, "d2": 1.0}
    assert ds["q2"].metadata == {"topic": "ir"} and ds["q2"].contexts == ["c1"]
    with pytest.raises(DatasetError, match="unknown field"):
        Dataset.from_records(RECORDS, name="qa", extra_to_metadata=False)


def test_field_mapping_and_auto_ids() -> None:
    ds = Dataset.from_records(
        [{"question": "x?", "answer": "y"}], fields={"input": "question", "reference": "answer"}, auto_id=True
    )
    assert ds[0].input == "x?" and ds[0].reference == "y" and len(ds[0].id) == 16
    again = Dataset.from_records(
        [{"question": "x?", "answer": "y"}], fields={"input": "question", "reference": "answer"}, auto_id=True
    )
    assert again[0].id == ds[0].id  # stable: derived from the input


def test_version_is_a_content_hash() -> None:
    a = Dataset.from_records(RECORDS, name="qa")
    b = Dataset.from_records(json.loads(json.dumps(RECORDS)), name="qa")
    assert a.version == b.version
    changed = [dict(RECORDS[0], reference="another"), RECORDS[1]]
    assert Dataset.from_records(changed, name="qa").version != a.version


def test_duplicate_ids_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="duplicate example id 'q1'"):
        Dataset.from_records([RECORDS[0], RECORDS[0]])
    p = tmp_path / "dup.jsonl"
    p.write_text(json.dumps(RECORDS[0]) + "\n\n" + json.dumps(RECORDS[0]) + "\n")
    with pytest.raises(DatasetError, match=r"dup\.jsonl:3: duplicate example id 'q1' \(first at .*dup\.jsonl:1\)"):
        Dataset.from_jsonl(p)


def test_jsonl_bad_rows_name_file_line_and_field(tmp_path: Path) -> None:
    p = tmp_path / "qa.jsonl"
    p.write_text(json.dumps(RECORDS[0]) + "\n" + '{"id": "q2", "input": "x", "relevant": {"d1": "very"}}\n')
    with pytest.raises(DatasetError, match=r"qa\.jsonl:2: field 'relevant\.d1'"):
        Dataset.from_jsonl(p)
    p.write_text(json.dumps(RECORDS[0]) + "\n" + '{"id": "q2", "input": \n')
    with pytest.raises(DatasetError, match=r"qa\.jsonl:2: invalid JSON"):
        Dataset.from_jsonl(p)
    p.write_text('{"id": "q3", "question": "x"}\n')
    with pytest.raises(DatasetError, match=r"qa\.jsonl:1: field 'query' \(the example input\) is missing"):
        Dataset.from_jsonl(p, fields={"input": "query"})
    with pytest.raises(DatasetError, match=r"qa\.jsonl:1: field 'input' \(the example input\) is missing"):
        Dataset.from_jsonl(p)
    with pytest.raises(DatasetError, match="does not exist"):
        Dataset.from_jsonl(tmp_path / "nope.jsonl")


def test_jsonl_round_trip_and_name_from_file(tmp_path: Path) -> None:
    ds = Dataset.from_records(RECORDS, name="qa")
    p = tmp_path / "support.jsonl"
    ds.to_jsonl(p)
    back = Dataset.from_jsonl(p)
    assert back.name == "support" and back.version == ds.version


def test_csv_loader_parses_json_cells_and_reports_lines(tmp_path: Path) -> None:
    p = tmp_path / "qa.csv"
    p.write_text('id,question,answer,relevant,lang\nq1,What?,That,"{""d1"": 1}",en\nq2,Why?,,,fr\n')
    ds = Dataset.from_csv(p, fields={"input": "question", "reference": "answer"})
    assert ds["q1"].relevant == {"d1": 1.0} and ds["q1"].metadata == {"lang": "en"}
    assert ds["q2"].reference is None
    p.write_text('id,input,relevant\nq1,What?,"{""d1"": 1}"\nq2,Why?,{not json}\n')
    with pytest.raises(DatasetError, match=r"qa\.csv:3: field 'relevant': not valid JSON"):
        Dataset.from_csv(p)


def test_from_pandas() -> None:
    import pandas as pd

    df = pd.DataFrame({"id": ["a", "b"], "input": ["x", "y"], "reference": ["1", None], "score": [0.5, float("nan")]})
    ds = Dataset.from_pandas(df, name="df")
    assert ds["a"].metadata == {"score": 0.5} and ds["b"].reference is None and ds["b"].metadata == {}
    round_trip = Dataset.from_pandas(ds.to_pandas(), name="df")
    assert round_trip.version == ds.version


@pytest.mark.skipif(not SCIFACT.exists(), reason="SciFact (BEIR) not available")
def test_from_beir_scifact() -> None:
    ds = Dataset.from_beir(SCIFACT, "test")
    assert ds.name == "scifact-test" and len(ds) == 300  # SciFact's test split judges 300 queries
    ex = ds[0]
    assert ex.relevant and all(g >= 1 for g in ex.relevant.values())
    assert ds.corpus is not None and len(ds.corpus) == 5183
    assert all(d in ds.corpus for e in ds for d in (e.relevant or {}))


def test_beir_errors_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "q"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\tx\n")
    with pytest.raises(DatasetError, match=r"test\.tsv:2: field 'score'"):
        Dataset.from_beir(tmp_path)
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n2\td1\t1\n")
    with pytest.raises(DatasetError, match="query id '2' has judgements but is not in queries.jsonl"):
        Dataset.from_beir(tmp_path)
    with pytest.raises(DatasetError, match="dev.tsv not found"):
        Dataset.from_beir(tmp_path, "dev")


def _push_and_load(url: str) -> None:
    store = open_store(url)
    ds = Dataset.from_records(RECORDS, name="qa")
    v1 = ds.push(store)
    assert ds.push(store) == v1  # identical content: same version, stored once
    assert store.query("SELECT COUNT(*) FROM datasets WHERE name = 'qa'")[0][0] == 1
    v2 = Dataset.from_records([*RECORDS, {"id": "q3", "input": "new"}], name="qa").push(store)
    assert v2 != v1
    old = load_dataset(store, f"qa:{v1}")
    assert old.version == v1 and old.ids == ["q1", "q2"] and old["q1"].relevant == {"d1": 2.0, "d2": 1.0}
    assert load_dataset(store, "qa").version == v2  # bare name: newest
    with pytest.raises(DatasetError, match="no version 'nope'"):
        load_dataset(store, "qa:nope")
    with pytest.raises(DatasetError, match="no dataset 'other'"):
        load_dataset(store, "other")


def test_push_and_load_sqlite(store_path: str) -> None:
    _push_and_load(store_path)
    assert Client(store_path).dataset("qa").name == "qa"


def test_push_and_load_postgres(pg_url: str) -> None:
    _push_and_load(pg_url)


def test_diff_lists_added_removed_changed() -> None:
    a = Dataset.from_records(RECORDS, name="qa")
    b = Dataset.from_records([dict(RECORDS[0], reference="changed"), {"id": "q3", "input": "z"}], name="qa")
    d = a.diff(b)
    assert (d.added, d.removed, d.changed) == (["q3"], ["q2"], ["q1"])
    assert "+1 -1 ~1" in str(d)
    assert a.diff(a).unchanged


def test_cli_push_list_show_diff(tmp_path: Path, store_path: str) -> None:
    from typer.testing import CliRunner

    from ragtrail.cli import app

    p = tmp_path / "qa.jsonl"
    Dataset.from_records(RECORDS, name="qa").to_jsonl(p)
    r = CliRunner().invoke(app, ["datasets", "push", str(p), "--name", "qa", "-s", store_path])
    assert r.exit_code == 0, r.output
    v1 = r.output.split()[0]
    Dataset.from_records(RECORDS[:1], name="qa").to_jsonl(p)
    v2 = CliRunner().invoke(app, ["datasets", "push", str(p), "--name", "qa", "-s", store_path]).output.split()[0]
    out = CliRunner().invoke(app, ["datasets", "list", "-s", store_path]).output
    assert v1.split(":")[1] in out and v2.split(":")[1] in out
    out = CliRunner().invoke(app, ["datasets", "show", v1, "-s", store_path]).output
    assert "2 examples" in out and "q2" in out
    out = CliRunner().invoke(app, ["datasets", "diff", v1, v2, "-s", store_path]).output
    assert "- q2" in out and "+0 -1 ~0" in out
