"""Versioned datasets: examples with stable ids, a content-hash version, loaders and diffs.

The version is a hash of the examples' canonical JSON (in order), so pushing identical content gives
the same version and a run that recorded ``dataset_version`` always resolves the exact snapshot.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ragtrail._deps import require
from ragtrail._exceptions import DatasetError
from ragtrail.evals._types import Example
from ragtrail.store import _evals as repo
from ragtrail.tracing._content import mask_value

if TYPE_CHECKING:
    import pandas as pd

    from ragtrail.store import Store

__all__ = ["Dataset", "DatasetDiff", "list_datasets", "load_dataset"]

_FIELDS = ("id", "input", "reference", "relevant", "contexts", "metadata")
_JSON_FIELDS = ("relevant", "contexts", "metadata")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _example_json(ex: Example) -> str:
    return _canonical(mask_value(ex.model_dump(mode="json")))  # stored masked, as span content is


@dataclass
class DatasetDiff:
    """Ids added, removed and changed from ``a`` to ``b``."""

    a: str
    b: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def __str__(self) -> str:
        lines = [f"{self.a} -> {self.b}: +{len(self.added)} -{len(self.removed)} ~{len(self.changed)}"]
        lines += [f"  + {i}" for i in self.added]
        lines += [f"  - {i}" for i in self.removed]
        lines += [f"  ~ {i}" for i in self.changed]
        return "\n".join(lines)


def _where(source: str | None, line: int | None) -> str:
    if source is None:
        return f"record {line}" if line is not None else "record"
    return f"{source}:{line}" if line is not None else source


def _build(
    row: Mapping[str, Any],
    where: str,
    fields: Mapping[str, str] | None,
    auto_id: bool,
    extra_to_metadata: bool,
) -> Example:
    if not isinstance(row, Mapping):
        raise DatasetError(f"{where}: expected an object with fields {', '.join(_FIELDS)}, got {type(row).__name__}")
    mapping = dict(fields or {})
    data: dict[str, Any] = {}
    used: set[str] = set()
    for f in _FIELDS:
        src = mapping.get(f, f)
        if src in row:
            data[f] = row[src]
            used.add(src)
    extra = {k: v for k, v in row.items() if k not in used}
    if extra:
        if not extra_to_metadata:
            raise DatasetError(
                f"{where}: unknown field(s) {', '.join(map(repr, sorted(extra)))}; the fields are "
                f"{', '.join(_FIELDS)} (map your columns with fields={{'input': 'question', ...}})"
            )
        md = dict(data.get("metadata") or {})
        md.update(extra)
        data["metadata"] = md
    if "input" not in data:
        src = mapping.get("input", "input")
        raise DatasetError(
            f"{where}: field {src!r} (the example input) is missing; map another column with fields={{'input': ...}}"
        )
    if data.get("id") in (None, "") and auto_id:
        data["id"] = hashlib.sha256(_canonical(data["input"]).encode()).hexdigest()[:16]
    elif "id" not in data:
        src = mapping.get("id", "id")
        raise DatasetError(
            f"{where}: field {src!r} (the example id) is missing; give every example a stable id or pass auto_id=True"
        )
    if data.get("id") is not None and not isinstance(data["id"], str):
        data["id"] = str(data["id"])
    if data.get("metadata") is None:
        data.pop("metadata", None)
    try:
        return Example(**data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "?"
        top = str(err["loc"][0]) if err["loc"] else "?"
        col = mapping.get(top, top)
        shown = col if loc == top else f"{col}{loc[len(top) :]}"
        raise DatasetError(f"{where}: field {shown!r}: {err['msg']}") from exc


class Dataset:
    """An ordered set of :class:`Example` with unique ids, a name and a content-hash version.

    Build one with :meth:`from_records`, :meth:`from_jsonl`, :meth:`from_csv`, :meth:`from_pandas`
    or :meth:`from_beir`; :meth:`push` stores it; ``Client().dataset("name:version")`` reads it back.
    """

    def __init__(
        self,
        examples: Iterable[Example],
        name: str = "dataset",
        *,
        description: str | None = None,
        corpus: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        if not name or ":" in name or "/" in name:
            raise DatasetError(f"dataset name {name!r} must be non-empty and contain neither ':' nor '/'")
        self.name = name
        self.description = description
        self.examples: list[Example] = list(examples)
        self.corpus: dict[str, Any] | None = dict(corpus) if corpus is not None else None
        self.meta: dict[str, Any] = dict(meta or {})
        self._by_id: dict[str, Example] = {}
        for i, ex in enumerate(self.examples):
            if not isinstance(ex, Example):
                raise DatasetError(f"dataset {name!r}: item {i} is a {type(ex).__name__}, not an Example")
            if ex.id in self._by_id:
                raise DatasetError(
                    f"dataset {name!r}: duplicate example id {ex.id!r} (positions "
                    f"{self.examples.index(self._by_id[ex.id])} and {i}); ids must be unique"
                )
            self._by_id[ex.id] = ex
        self._version: str | None = None

    # ------------------------------------------------------------------------------ basics
    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[Example]:
        return iter(self.examples)

    def __getitem__(self, key: int | str) -> Example:
        if isinstance(key, str):
            try:
                return self._by_id[key]
            except KeyError:
                raise KeyError(f"dataset {self.name!r} has no example {key!r}") from None
        return self.examples[key]

    def __contains__(self, example_id: object) -> bool:
        return example_id in self._by_id

    def __repr__(self) -> str:
        return f"Dataset({self.name!r}, version={self.version!r}, {len(self)} examples)"

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.examples]

    @property
    def version(self) -> str:
        """Content hash of the examples (order included): identical content, identical version."""
        if self._version is None:
            h = hashlib.sha256()
            for ex in self.examples:
                h.update(_example_json(ex).encode())
                h.update(b"\n")
            self._version = h.hexdigest()[:12]
        return self._version

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def select(self, ids: Iterable[str]) -> Dataset:
        """A dataset with the given example ids (in this dataset's order)."""
        want = set(ids)
        return Dataset(
            [e for e in self.examples if e.id in want], self.name, description=self.description, corpus=self.corpus
        )

    def head(self, n: int) -> Dataset:
        return Dataset(self.examples[:n], self.name, description=self.description, corpus=self.corpus)

    def to_records(self) -> list[dict[str, Any]]:
        return [e.model_dump(mode="json") for e in self.examples]

    def to_pandas(self) -> pd.DataFrame:
        require("pandas", extra="analysis", feature="Dataset.to_pandas()")
        import pandas as pd

        return pd.DataFrame(self.to_records(), columns=list(_FIELDS))

    def to_jsonl(self, path: str | os.PathLike[str]) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for ex in self.examples:
                f.write(json.dumps(ex.model_dump(mode="json"), ensure_ascii=False) + "\n")

    def diff(self, other: Dataset) -> DatasetDiff:
        """Ids added, removed and changed going from ``self`` to ``other``."""
        a = {e.id: _example_json(e) for e in self.examples}
        b = {e.id: _example_json(e) for e in other.examples}
        return DatasetDiff(
            a=self.ref,
            b=other.ref,
            added=[i for i in b if i not in a],
            removed=[i for i in a if i not in b],
            changed=[i for i in b if i in a and a[i] != b[i]],
        )

    # ------------------------------------------------------------------------------ store
    def push(self, store: Any = None) -> str:
        """Store this snapshot (idempotent: identical content is stored once); returns the version."""
        st = _store(store)
        version = self.version
        if not repo.dataset_exists(st, self.name, version):
            repo.insert_dataset(
                st, self.name, version, description=self.description, meta=_canonical(self.meta),
                examples=[(e.id, _example_json(e)) for e in self.examples],
            )  # fmt: skip
        return version

    # ------------------------------------------------------------------------------ from traces
    @classmethod
    def from_traces(
        cls,
        traces: Iterable[Any],
        input: Any = "input",  # noqa: A002 - the public name of the mapping
        output: Any = "output",
        reference: Any = None,
        *,
        name: str = "traces",
        description: str | None = None,
        store: Any = None,
    ) -> Dataset:
        """One example per trace (``Client().traces(...)`` objects or trace ids, looked up in ``store``):
        ``id`` the trace id; ``input``/``reference`` and ``metadata["output"]`` from a callable
        ``f(trace)`` or a dotted path into the root span's ``input``/``output``/``attributes`` or the
        trace's ``feedback`` (``reference="feedback.corrected_answer"``); ``metadata["source_trace_id"]``
        and ``meta["trace_ids"]`` keep the lineage. See :mod:`ragtrail.evals._from_traces`."""
        from ragtrail.evals._from_traces import from_traces

        return from_traces(cls, traces, input, output, reference, name=name, description=description, store=store)

    def add_traces(
        self,
        traces: Iterable[Any],
        input: Any = None,  # noqa: A002 - the public name of the mapping
        output: Any = None,
        reference: Any = None,
        *,
        store: Any = None,
    ) -> Dataset:
        """The next version: this dataset's examples plus one per new trace (traces already in it are
        skipped); mappings default to the ones this dataset was made with."""
        from ragtrail.evals._from_traces import from_traces

        m = self.meta.get("mapping") or {}
        return from_traces(
            type(self), traces, input or m.get("input") or "input", output or m.get("output") or "output",
            reference or m.get("reference"), name=self.name, store=store, base=self,
        )  # fmt: skip

    # ------------------------------------------------------------------------------ loaders
    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        name: str = "dataset",
        *,
        fields: Mapping[str, str] | None = None,
        auto_id: bool = False,
        extra_to_metadata: bool = True,
        description: str | None = None,
        source: str | None = None,
    ) -> Dataset:
        """From dicts with ``id``, ``input`` and optional ``reference``, ``relevant`` ({doc_id: grade}),
        ``contexts``, ``metadata``. ``fields`` maps these names to your keys
        (``{"input": "question", "reference": "answer"}``); other keys go into ``metadata``
        (``extra_to_metadata=False`` rejects them). ``auto_id=True`` derives missing ids from the input."""
        exs = [_build(r, _where(source, i), fields, auto_id, extra_to_metadata) for i, r in enumerate(records)]
        return cls._checked(exs, name, description, source)

    @classmethod
    def _checked(cls, exs: list[Example], name: str, description: str | None, source: str | None,
                 lines: Sequence[str] | None = None, corpus: Mapping[str, Any] | None = None) -> Dataset:  # fmt: skip
        seen: dict[str, int] = {}
        for i, e in enumerate(exs):
            if e.id in seen:
                where_a = lines[seen[e.id]] if lines else _where(source, seen[e.id])
                where_b = lines[i] if lines else _where(source, i)
                raise DatasetError(f"{where_b}: duplicate example id {e.id!r} (first at {where_a}); ids must be unique")
            seen[e.id] = i
        return cls(exs, name, description=description, corpus=corpus)

    @classmethod
    def from_jsonl(
        cls,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        fields: Mapping[str, str] | None = None,
        auto_id: bool = False,
        extra_to_metadata: bool = True,
        description: str | None = None,
    ) -> Dataset:
        """From a JSON Lines file, one example per line (blank lines skipped). Errors name file:line."""
        p = Path(path)
        if not p.exists():
            raise DatasetError(f"dataset file {str(p)!r} does not exist")
        exs: list[Example] = []
        where: list[str] = []
        with p.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                w = f"{p}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{w}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
                exs.append(_build(row, w, fields, auto_id, extra_to_metadata))
                where.append(w)
        return cls._checked(exs, name or p.stem, description, str(p), where)

    @classmethod
    def from_csv(
        cls,
        path: str | os.PathLike[str],
        name: str | None = None,
        *,
        fields: Mapping[str, str] | None = None,
        auto_id: bool = False,
        extra_to_metadata: bool = True,
        description: str | None = None,
        delimiter: str = ",",
    ) -> Dataset:
        """From a CSV file with a header row. ``relevant``, ``contexts`` and ``metadata`` cells hold JSON;
        empty cells are missing values. Errors name file:line and the column."""
        p = Path(path)
        if not p.exists():
            raise DatasetError(f"dataset file {str(p)!r} does not exist")
        mapping = dict(fields or {})
        json_cols = {mapping.get(f, f): f for f in _JSON_FIELDS}
        exs: list[Example] = []
        where: list[str] = []
        with p.open(encoding="utf-8", newline="") as f:
            reader = csv.DictReader(f, delimiter=delimiter)
            for row in reader:
                w = f"{p}:{reader.line_num}"
                clean: dict[str, Any] = {}
                for k, v in row.items():
                    if k is None:
                        raise DatasetError(f"{w}: more cells than header columns")
                    if v is None or v == "":
                        continue
                    if k in json_cols:
                        try:
                            v = json.loads(v)
                        except json.JSONDecodeError as exc:
                            raise DatasetError(f"{w}: field {k!r}: not valid JSON ({exc.msg})") from exc
                    clean[k] = v
                exs.append(_build(clean, w, fields, auto_id, extra_to_metadata))
                where.append(w)
        return cls._checked(exs, name or p.stem, description, str(p), where)

    @classmethod
    def from_pandas(
        cls,
        df: pd.DataFrame,
        name: str = "dataset",
        *,
        fields: Mapping[str, str] | None = None,
        auto_id: bool = False,
        extra_to_metadata: bool = True,
        description: str | None = None,
    ) -> Dataset:
        """From a DataFrame, one example per row (NaN/None cells are missing values)."""
        import pandas as pd

        records = []
        for rec in df.to_dict(orient="records"):
            records.append(
                {k: v for k, v in rec.items() if not (v is None or (not isinstance(v, (list, dict)) and pd.isna(v)))}
            )
        exs = [_build(r, f"row {i}", fields, auto_id, extra_to_metadata) for i, r in enumerate(records)]
        return cls._checked(exs, name, description, "DataFrame", [f"row {i}" for i in range(len(exs))])

    @classmethod
    def from_beir(
        cls,
        directory: str | os.PathLike[str],
        split: str = "test",
        name: str | None = None,
        *,
        load_corpus: bool = True,
    ) -> Dataset:
        """From a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``).

        One example per query that has judgements in the split: ``id`` the query id, ``input`` the
        query text, ``relevant`` its graded qrels. The corpus (``{doc_id: {"title", "text"}}``) is
        kept on ``dataset.corpus`` for building an index; it is not part of the version.
        """
        d = Path(directory)
        qrels_path = d / "qrels" / f"{split}.tsv"
        queries_path = d / "queries.jsonl"
        for needed in (qrels_path, queries_path):
            if not needed.exists():
                raise DatasetError(f"BEIR folder {str(d)!r}: {needed.name} not found at {str(needed)!r}")
        qrels: dict[str, dict[str, float]] = {}
        with qrels_path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                parts = line.rstrip("\n").split("\t")
                if lineno == 1 and parts and not parts[-1].lstrip("-").isdigit():
                    continue  # header
                if not line.strip():
                    continue
                if len(parts) < 3:
                    raise DatasetError(f"{qrels_path}:{lineno}: expected query-id<TAB>corpus-id<TAB>score")
                try:
                    grade = float(parts[-1])
                except ValueError as exc:
                    raise DatasetError(f"{qrels_path}:{lineno}: field 'score': {parts[-1]!r} is not a number") from exc
                qrels.setdefault(parts[0], {})[parts[-2]] = grade
        queries: dict[str, str] = {}
        with queries_path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    q = json.loads(line)
                    queries[str(q["_id"])] = q["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise DatasetError(
                        f"{queries_path}:{lineno}: expected {{'_id': ..., 'text': ...}} ({exc})"
                    ) from exc
        missing = [q for q in qrels if q not in queries]
        if missing:
            raise DatasetError(
                f"{qrels_path}: query id {missing[0]!r} has judgements but is not in {queries_path.name}"
            )
        exs = [Example(id=qid, input=queries[qid], relevant=qrels[qid]) for qid in queries if qid in qrels]
        corpus: dict[str, Any] | None = None
        if load_corpus and (d / "corpus.jsonl").exists():
            corpus = {}
            with (d / "corpus.jsonl").open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        doc = json.loads(line)
                        corpus[str(doc["_id"])] = {"title": doc.get("title", ""), "text": doc["text"]}
                    except (json.JSONDecodeError, KeyError, TypeError) as exc:
                        raise DatasetError(
                            f"{d / 'corpus.jsonl'}:{lineno}: expected {{'_id', 'text'}} ({exc})"
                        ) from exc
        return cls(exs, name or f"{d.name}-{split}", corpus=corpus, meta={"source": "beir", "split": split})


def _store(store: Any) -> Store:
    from ragtrail._store_of import store_of

    return store_of(store)


def load_dataset(store: Any, ref: str) -> Dataset:
    """A stored dataset: ``name`` (the newest version) or ``name:version``."""
    st = _store(store)
    name, _, version = ref.partition(":")
    if not version:
        latest = repo.latest_dataset_version(st, name)
        if latest is None:
            known = ", ".join(repo.dataset_names(st)) or "none"
            raise DatasetError(f"no dataset {name!r} in the store {st.url} (stored datasets: {known})")
        version = latest
    meta = repo.dataset_meta(st, name, version)
    if meta is None:
        vs = repo.dataset_versions(st, name)
        raise DatasetError(
            f"no version {version!r} of dataset {name!r} in the store {st.url} "
            f"(versions: {', '.join(vs) or 'none'}); `ragtrail datasets list` shows what is stored"
        )
    rows = repo.dataset_example_data(st, name, version)
    ds = Dataset(
        [Example.model_validate_json(data) for _ex_id, data in rows],
        name,
        description=meta[0],
        meta=json.loads(meta[1]) if meta[1] else None,
    )
    if ds.version != version:  # pragma: no cover - only if the stored rows were edited by hand
        raise DatasetError(f"dataset {name}:{version} in the store does not hash to its version (edited by hand?)")
    return ds


def list_datasets(store: Any, name: str | None = None) -> list[dict[str, Any]]:
    """Stored datasets, newest first: name, version, created_at, n_examples, description."""
    return repo.list_datasets(_store(store), name)
