"""Sweep files mean what W&B's sweep reference (and its reference sampler) says they mean: the default
goal, q_* lattices and int types, grids as W&B builds them, run_cap as a cap, every W&B distribution
(a KS test per family over 2,000 draws of the real sampling path), early_terminate validated,
unknown keys refused with a did-you-mean, and W&B's program/command explained. Each trial's run is
a real stored run (rows as the harness writes them); no pipeline is involved."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from test_compare_support import make_run
from typer.testing import CliRunner

from ragtrail._exceptions import ConfigError
from ragtrail.evals._sweep import load_sweep, planned_configs, run_sweep, sweep_runs_df
from ragtrail.store import open_store

IDS = [f"q{i}" for i in range(10)]


@pytest.fixture
def store(store_path):  # type: ignore[no-untyped-def]
    s = open_store(store_path)
    yield s
    s.close()


def _recorder(store, seen: list, score=lambda c: 0.5):  # type: ignore[no-untyped-def]
    """evaluate(config): records the config it got and stores a run scoring ``score(config)``."""

    def evaluate(config: dict) -> str:
        seen.append(config)
        return make_run(store, "toy", {"loss": {e: float(score(config)) for e in IDS}}, config=config)

    return evaluate


def test_an_omitted_goal_minimizes_as_in_wandb(store) -> None:  # type: ignore[no-untyped-def]
    spec = {"method": "grid", "metric": {"name": "loss"}, "parameters": {"lr": {"values": [0.1, 0.2, 0.3]}}}
    res = run_sweep(spec, _recorder(store, [], score=lambda c: c["lr"]), store=store)
    assert res.spec.goal == "minimize" and res.best.params["lr"] == 0.1 and res.best.value == pytest.approx(0.1)


def test_q_uniform_gives_ints_for_an_int_q_on_multiples_of_q(store) -> None:  # type: ignore[no-untyped-def]
    seen: list = []
    spec = {"method": "random", "seed": 1, "run_cap": 12, "metric": {"name": "loss"},
            "parameters": {"top_k": {"distribution": "q_uniform", "min": 1, "max": 10, "q": 2},
                           "temp": {"distribution": "q_uniform", "min": 0.05, "max": 0.5, "q": 0.1}}}  # fmt: skip
    run_sweep(spec, _recorder(store, seen), store=store)
    assert len(seen) == 12
    for c in seen:
        assert type(c["top_k"]) is int and c["top_k"] % 2 == 0 and 0 <= c["top_k"] <= 10
        assert isinstance(c["temp"], float) and c["temp"] == round(c["temp"] / 0.1) * 0.1
        k = round(c["temp"] / 0.1)
        assert 0 <= k <= 5 and abs(c["temp"] - k * 0.1) < 1e-12  # multiples of q, not 0.05 + k*q
    # q omitted: W&B's default q is the float 1.0, so values are floats
    spec["parameters"] = {"top_k": {"distribution": "q_uniform", "min": 1, "max": 10}}
    seen.clear()
    run_sweep(spec, _recorder(store, seen), store=store)
    assert all(isinstance(c["top_k"], float) and c["top_k"].is_integer() for c in seen)


def test_grid_lattices_as_wandb_builds_them_in_its_order(store) -> None:  # type: ignore[no-untyped-def]
    spec = load_sweep({"method": "grid", "metric": {"name": "loss"}, "parameters": {
        "z": {"values": ["a", "b", "a"]},                                     # duplicate removed
        "chunk": {"distribution": "q_uniform", "min": 0, "max": 512, "q": 256},  # max left out
        "k": {"min": 1, "max": 2},                                             # int_uniform: max included
        "model": {"value": "m"},
    }})  # fmt: skip
    assert spec.grid() == [  # parameters sorted by name (chunk, k, z), the last varying fastest
        {"z": z, "chunk": c, "k": k, "model": "m"} for c in (0, 256) for k in (1, 2) for z in ("a", "b")
    ]
    frac = load_sweep({"method": "grid", "metric": {"name": "l"},
                       "parameters": {"x": {"distribution": "q_uniform", "min": 0.05, "max": 0.5, "q": 0.1}}})  # fmt: skip
    assert [p["x"] for p in frac.grid()] == np.arange(0.05, 0.5, 0.1).tolist()  # W&B's grid starts at min
    seen: list = []
    res = run_sweep({"method": "grid", "metric": {"name": "loss"}, "parameters": {"k": {"values": [3, 3, 6, 3.0]}}},
                    _recorder(store, seen), store=store)  # fmt: skip
    assert [c["k"] for c in seen] == [3.0, 6] and len(res.trials) == 2  # 3 == 3.0 for W&B: one trial


def test_run_cap_caps_count_and_must_be_positive(store) -> None:  # type: ignore[no-untyped-def]
    seen: list = []
    spec = {"method": "random", "run_cap": 3, "count": 5, "seed": 0, "metric": {"name": "loss"},
            "parameters": {"lr": {"min": 0.0, "max": 1.0}}}  # fmt: skip
    run_sweep(spec, _recorder(store, seen), store=store)
    assert len(seen) == 3
    with pytest.raises(ConfigError, match=r"run_cap must be a positive integer, not 0"):
        load_sweep({**spec, "run_cap": 0})
    seen.clear()
    run_sweep({"method": "grid", "run_cap": 2, "metric": {"name": "loss"}, "parameters": {"k": {"values": [1, 2, 3]}}},
              _recorder(store, seen), store=store)  # fmt: skip
    assert [c["k"] for c in seen] == [1, 2]


@pytest.mark.parametrize(
    ("et", "match"),
    [
        (
            {"type": "nonsense", "min_iter": 3},
            r"early_terminate\.type: 'nonsense' is not supported; W&B's one type is hyperband",
        ),
        ({"type": "hyperband"}, r"early_terminate: give min_iter .*or max_iter and s"),
        ({"type": "hyperband", "min_iter": 0}, r"early_terminate\.min_iter must be a positive integer"),
        ({"type": "hyperband", "min_iter": 3, "eta": 2.5}, r"early_terminate\.eta: must be an integer >= 2"),
        ({"type": "hyperband", "min_iter": 3, "etaa": 3}, r"early_terminate\.etaa: unknown key; did you mean 'eta'\?"),
        ({"type": "hyperband", "min_iter": 3, "strict": False}, r"early_terminate\.strict: only strict: true"),
    ],
)
def test_early_terminate_is_validated(et, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        load_sweep(
            {"method": "grid", "metric": {"name": "m"}, "early_terminate": et, "parameters": {"a": {"value": 1}}}
        )


def test_early_terminate_bands_follow_wandb() -> None:
    base = {"method": "grid", "metric": {"name": "m"}, "parameters": {"a": {"value": 1}}}
    et = load_sweep({**base, "early_terminate": {"type": "hyperband", "min_iter": 3}}).early_terminate
    assert et is not None and (et.min_resource, et.eta, et.last_band) == (3, 3, None) and et.bands(30) == [3, 9, 27]
    et = load_sweep(
        {**base, "early_terminate": {"type": "hyperband", "max_iter": 27, "s": 2, "eta": 3}}
    ).early_terminate
    assert et is not None and et.bands(100) == [3, 9]  # W&B: max_iter / eta^i for i = 1..s


def test_unknown_keys_and_program_are_explained(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = {"method": "grid", "metric": {"name": "m"}, "parameters": {"a": {"values": [1]}}}
    with pytest.raises(ConfigError, match=r"metric\.gaol: unknown key; did you mean 'goal'\?"):
        load_sweep({**base, "metric": {"name": "m", "gaol": "maximize"}})
    with pytest.raises(ConfigError, match=r"run_capp: unknown key; did you mean 'run_cap'\?"):
        load_sweep({**base, "run_capp": 3})
    (tmp_path / "sweep.yaml").write_text(
        "program: train.py\nmethod: grid\nmetric: {name: m}\nparameters:\n  a: {values: [1, 2]}\n"
    )
    from ragtrail.cli import app

    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--dry-run"])
    assert res.exit_code != 0
    assert "program: 'train.py' is the script a W&B agent starts" in str(res.exception) + res.output
    assert "eval: eval.yaml" in str(res.exception) + res.output
    # with an eval target, program/command are accepted (and not used)
    (tmp_path / "sweep.yaml").write_text(
        "program: train.py\ncommand: [python, train.py]\neval: eval.yaml\nmethod: grid\nmetric: {name: m}\n"
        "parameters:\n  a: {values: [1, 2]}\n"
    )
    res = CliRunner().invoke(app, ["sweep", str(tmp_path / "sweep.yaml"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "2 grid point(s)" in res.output


def test_weighted_categoricals_are_sampled_but_not_gridded() -> None:
    with pytest.raises(ConfigError, match=r"parameters\.c: grid search needs discrete values.*probabilities"):
        load_sweep({"method": "grid", "metric": {"name": "m"},
                    "parameters": {"c": {"values": ["x", "y"], "probabilities": [0.3, 0.7]}}})  # fmt: skip


# ------------------------------------------------------------------------- distributions (KS)
def _jitter_cdf(base_cdf, q: float):  # type: ignore[no-untyped-def]
    """CDF of round(X / q) * q + U(-q/2, q/2), X ~ base: continuous, so KS applies to a lattice."""

    def cdf(y):  # type: ignore[no-untyped-def]
        y = np.asarray(y, dtype=float)
        k = np.floor(y / q + 0.5)
        lo = base_cdf((k - 0.5) * q)
        hi = base_cdf((k + 0.5) * q)
        return lo + (hi - lo) * (y - (k - 0.5) * q) / q

    return cdf


FAMILIES = {  # name: (parameter spec, reference CDF from scipy (continuous) or (base CDF, q) (lattice))
    "uniform": ({"distribution": "uniform", "min": -1.0, "max": 3.0}, stats.uniform(-1, 4).cdf),
    "int_uniform": ({"min": 1, "max": 6}, ("int", stats.randint(1, 7).cdf)),
    "log_uniform": ({"distribution": "log_uniform", "min": -4.0, "max": 0.0}, stats.loguniform(math.exp(-4), 1).cdf),
    "log_uniform_values": ({"distribution": "log_uniform_values", "min": 1e-4, "max": 1e-1}, stats.loguniform(1e-4, 1e-1).cdf),
    "inv_log_uniform": ({"distribution": "inv_log_uniform", "min": 0.0, "max": 3.0}, stats.loguniform(math.exp(-3), 1).cdf),
    "inv_log_uniform_values": ({"distribution": "inv_log_uniform_values", "min": 0.01, "max": 1.0}, stats.loguniform(0.01, 1).cdf),
    "normal": ({"distribution": "normal", "mu": 2.0, "sigma": 3.0}, stats.norm(2, 3).cdf),
    "log_normal": ({"distribution": "log_normal", "mu": 0.5, "sigma": 0.4}, stats.lognorm(s=0.4, scale=math.exp(0.5)).cdf),
    "beta": ({"distribution": "beta", "a": 2.0, "b": 5.0}, stats.beta(2, 5).cdf),
    "q_uniform": ({"distribution": "q_uniform", "min": 0.0, "max": 10.0, "q": 2}, (stats.uniform(0, 10).cdf, 2)),
    "q_log_uniform": ({"distribution": "q_log_uniform", "min": 0.0, "max": 3.0, "q": 1}, (stats.loguniform(1, math.exp(3)).cdf, 1)),
    "q_log_uniform_values": ({"distribution": "q_log_uniform_values", "min": 1, "max": 100, "q": 5}, (stats.loguniform(1, 100).cdf, 5)),
    "q_normal": ({"distribution": "q_normal", "mu": 0.0, "sigma": 4.0, "q": 1}, (stats.norm(0, 4).cdf, 1)),
    "q_log_normal": ({"distribution": "q_log_normal", "mu": 2.0, "sigma": 0.5, "q": 2}, (stats.lognorm(s=0.5, scale=math.exp(2)).cdf, 2)),
    "q_beta": ({"distribution": "q_beta", "a": 2.0, "b": 2.0, "q": 0.1}, (stats.beta(2, 2).cdf, 0.1)),
    "categorical_probabilities": ({"values": ["a", "b", "c"], "probabilities": [0.2, 0.5, 0.3]}, ("cat", np.array([0.2, 0.5, 0.3]))),
}  # fmt: skip


@pytest.fixture(scope="module")
def draws() -> list[dict]:
    spec = load_sweep({"method": "random", "seed": 7, "count": 2000, "metric": {"name": "m"},
                       "parameters": {name: p for name, (p, _) in FAMILIES.items()}})  # fmt: skip
    return planned_configs(spec, 2000)


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_distribution_samples_what_wandb_defines(draws, family) -> None:  # type: ignore[no-untyped-def]
    """2,000 draws through the sweep's own sampling path against the distribution's CDF (scipy's),
    with uniform jitter inside each lattice cell for the q_* and discrete families."""
    _, ref = FAMILIES[family]
    xs = np.array([d[family] for d in draws], dtype=object)
    rng = np.random.default_rng(1)
    if isinstance(ref, tuple) and ref[0] == "cat":
        idx = np.array([["a", "b", "c"].index(x) for x in xs], dtype=float) + rng.uniform(0, 1, len(xs))
        cum = np.concatenate([[0.0], np.cumsum(ref[1])])
        result = stats.kstest(idx, lambda y: np.interp(y, np.arange(4), cum))
    elif isinstance(ref, tuple) and ref[0] == "int":
        assert all(type(x) is int for x in xs)
        ys = xs.astype(float) + rng.uniform(-0.5, 0.5, len(xs))
        result = stats.kstest(ys, _jitter_cdf(ref[1], 1.0))
    elif isinstance(ref, tuple):
        base, q = ref
        assert all((type(x) is int) == isinstance(q, int) for x in xs)  # ints exactly when q is an int
        ys = xs.astype(float)
        assert np.allclose(ys / q, np.round(ys / q))  # on the lattice of multiples of q
        result = stats.kstest(ys + rng.uniform(-q / 2, q / 2, len(ys)), _jitter_cdf(base, q))
    else:
        result = stats.kstest(xs.astype(float), ref)
    assert result.pvalue > 0.001, f"{family}: KS statistic {result.statistic:.4f}, p = {result.pvalue:.2g}"


def test_sweep_runs_df_has_the_status(store) -> None:  # type: ignore[no-untyped-def]
    res = run_sweep({"method": "grid", "metric": {"name": "loss"}, "parameters": {"k": {"values": [1, 2]}}},
                    _recorder(store, []), store=store)  # fmt: skip
    df = sweep_runs_df(store, res.sweep_id)
    assert list(df.status) == ["finished", "finished"]
    lin = json.loads(store.query("SELECT lineage FROM runs WHERE run_id = ?", (res.trials[1].run_id,))[0][0])
    assert lin["sweep"]["trial"] == 1 and lin["sweep"]["state"] == "complete"
