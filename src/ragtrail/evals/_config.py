"""``eval.yaml``: the file ``ragtrail eval run`` reads, validated with clear errors.

::

    name: rag-qa
    dataset: data/qa.jsonl                 # or {path: …, name: …, fields: {input: question}},
                                           #    {ref: "support-qa:1a2b3c4d5e6f"}, {beir: dir, split: test}
    pipeline: my_app.rag:answer            # module:function (the YAML's folder is importable)
    scorers:
      - recall_at_k: {k: 5}
      - ndcg_at_k: {k: 10, gain: exponential}
      - token_f1
      - my_app.scorers:faithful            # module:function|class also works
    config: {top_k: 5}
    max_concurrency: 8
    max_cost: 2.50
    store: .ragtrail/ragtrail.db           # optional
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ragtrail._exceptions import ConfigError, DatasetError

__all__ = ["EvalSpec", "build", "find_reference", "import_object", "load_spec"]


class DatasetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str | None = None
    ref: str | None = None
    beir: str | None = None
    split: str = "test"
    name: str | None = None
    format: str | None = Field(default=None, pattern="^(jsonl|csv)$")
    fields: dict[str, str] | None = None
    auto_id: bool = False


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, pattern=r"^[^:]+$")
    dataset: str | DatasetSpec
    pipeline: str = Field(pattern=r"^[\w.]+:[\w.]+$")
    scorers: list[str | dict[str, Any]] = Field(min_length=1)
    config: dict[str, Any] = Field(default_factory=dict)
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    max_cost: float | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    batch_size: int = Field(default=256, ge=1)
    store: str | None = None
    project: str | None = None
    description: str | None = None


def load_spec(path: str | os.PathLike[str]) -> EvalSpec:
    """Parse and validate an eval YAML file; errors name the file, line/field and the fix."""
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"eval config {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping with name, dataset, pipeline and scorers at the top level")
    try:
        return EvalSpec.model_validate(data)
    except ValidationError as exc:
        msgs = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(x) for x in err["loc"])
            msgs.append(f"{loc or '(top level)'}: {err['msg']}")
        raise ConfigError(f"{p}: invalid eval config: " + "; ".join(msgs)) from exc


def import_object(ref: str, base_dir: str | os.PathLike[str] | None = None, what: str = "object") -> Any:
    """Import ``module:attr`` (dotted attr allowed); ``base_dir`` and the cwd are importable."""
    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"{what} {ref!r} must be 'module:function'")
    for d in (str(base_dir) if base_dir else None, os.getcwd()):
        if d and d not in sys.path:
            sys.path.insert(0, d)
    try:
        obj: Any = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"{what} {ref!r}: module {mod_name!r} not found ({exc}); check the name and PYTHONPATH"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"{what} {ref!r}: {mod_name!r} has no attribute {attr!r}") from None
    return obj


def find_reference(ref: str, base_dir: str | os.PathLike[str] | None = None, what: str = "object") -> str:
    """Check that ``module:attr`` exists *without importing or calling anything*: the module is
    located with the import system's finders (no parent package is executed) and its source is read
    with :mod:`ast` for the attribute. Returns where it was found; raises :class:`ConfigError`.

    This is what ``--dry-run`` does with the code an eval or sweep file names: a real run imports
    and calls that code, like pytest does with a ``conftest.py``.
    """
    import ast
    from importlib.machinery import PathFinder

    mod_name, _, attr = ref.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"{what} {ref!r} must be 'module:function'")
    search = [d for d in (str(base_dir) if base_dir else None, os.getcwd()) if d] + sys.path
    spec = None
    path: list[str] | None = search
    for i, part in enumerate(mod_name.split(".")):
        spec = PathFinder.find_spec(part, path)
        if spec is None:
            if ".".join(mod_name.split(".")[: i + 1]) in sys.builtin_module_names:
                return f"{what} {ref!r}: built-in module (attribute not checked)"
            raise ConfigError(f"{what} {ref!r}: module {mod_name!r} not found; check the name and PYTHONPATH")
        path = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    if not origin or not str(origin).endswith(".py") or not os.path.isfile(origin):
        return f"{what} {ref!r}: {origin or mod_name} (compiled; attribute not checked)"
    try:
        tree = ast.parse(Path(origin).read_text(encoding="utf-8"), filename=origin)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{what} {ref!r}: cannot read {origin}: {exc}") from exc
    names: set[str] = set()
    star = False
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for a in node.names:
                if a.name == "*":
                    star = True
                names.add(a.asname or a.name.split(".")[0])
        elif isinstance(node, (ast.If, ast.Try)):
            star = True  # names defined conditionally: not resolved without running the module
    first = attr.split(".")[0]
    if first not in names and not star:
        raise ConfigError(f"{what} {ref!r}: {origin} defines no {first!r}")
    return f"{what} {ref!r}: {origin}"


def _placeholder(ref: str) -> Any:
    from ragtrail.evals._scorers import FunctionScorer

    def unloaded(example: Any, output: Any, trace: Any) -> Any:  # pragma: no cover - never called
        raise ConfigError(f"{ref!r} was not loaded (dry run)")

    return FunctionScorer(unloaded, name=ref.partition(":")[2].split(".")[-1] or ref)


def _scorer(item: str | dict[str, Any], base_dir: Path, dry_run: bool = False) -> Any:
    from ragtrail.evals._registry import as_scorer
    from ragtrail.evals._scorers import FunctionScorer, Scorer

    if dry_run:
        ref = item if isinstance(item, str) else next(iter(item)) if isinstance(item, dict) and len(item) == 1 else ""
        if ":" in ref:
            find_reference(ref, base_dir, "scorer")
            return _placeholder(ref)
    if isinstance(item, str) and ":" in item:
        obj = import_object(item, base_dir, "scorer")
        if isinstance(obj, type) and issubclass(obj, Scorer):
            return obj()
        if isinstance(obj, Scorer):
            return obj
        if callable(obj):
            return FunctionScorer(obj)
        raise ConfigError(f"scorer {item!r} is not a Scorer or a function")
    if isinstance(item, dict) and len(item) == 1:
        ((k, v),) = item.items()
        if ":" in k:
            obj = import_object(k, base_dir, "scorer")
            params = v or {}
            if isinstance(obj, type):
                return obj(**params)
            made = obj(**params) if params else obj
            return as_scorer(made)
    return as_scorer(item)


def build(spec: EvalSpec, base_dir: str | os.PathLike[str] | None = None, *, dry_run: bool = False) -> Any:
    """An :class:`~ragtrail.evals.Evaluation` from a validated spec (dataset loaded, pipeline imported).

    With ``dry_run`` nothing the file names is imported or called: the pipeline and custom scorers
    are only located (:func:`find_reference`) and stand in as placeholders, enough for an estimate."""
    from ragtrail.evals._datasets import Dataset, load_dataset
    from ragtrail.evals._harness import Evaluation

    base = Path(base_dir or os.getcwd())

    def rel(p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else base / q

    ds_spec = spec.dataset if isinstance(spec.dataset, DatasetSpec) else DatasetSpec(path=spec.dataset)
    given = [k for k in ("path", "ref", "beir") if getattr(ds_spec, k)]
    if len(given) != 1:
        raise ConfigError("dataset: give exactly one of path, ref or beir")
    if ds_spec.ref:
        ds = load_dataset(spec.store, ds_spec.ref)
    elif ds_spec.beir:
        ds = Dataset.from_beir(rel(ds_spec.beir), ds_spec.split, ds_spec.name)
    else:
        path = rel(ds_spec.path or "")
        fmt = ds_spec.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
        loader = Dataset.from_csv if fmt == "csv" else Dataset.from_jsonl
        if not path.exists():
            raise DatasetError(f"dataset file {str(path)!r} (from the eval config) does not exist")
        ds = loader(path, ds_spec.name, fields=ds_spec.fields, auto_id=ds_spec.auto_id)
    if dry_run:
        find_reference(spec.pipeline, base, "pipeline")
        pipeline: Any = _placeholder(spec.pipeline).fn
    else:
        pipeline = import_object(spec.pipeline, base, "pipeline")
    scorers = [_scorer(s, base, dry_run) for s in spec.scorers]
    return Evaluation(
        spec.name, ds, pipeline, scorers, max_concurrency=spec.max_concurrency, store=spec.store,
        max_cost=spec.max_cost, timeout_s=spec.timeout_s, batch_size=spec.batch_size, project=spec.project,
        description=spec.description,
    )  # fmt: skip
