"""``Judge``: an LLM judge over any LangChain chat model, with structured verdicts you can trust.

What a judge call does, in order:

1. **Render** the scorer's messages and pick the output schema (a pydantic model whose JSON schema has
   the verdict first and every free-text field bounded by ``maxLength``).
2. **Cache**: the content address (model id, rendered messages, sampling parameters, schema, decoding
   method, scorer name and version, trial) is looked up in the store's ``judge_cache`` table; a hit
   is re-validated like a fresh answer and makes no request.
3. **Budget**: with ``max_cost`` set, a call whose worst-case cost would pass the budget is not made;
   the score is an error saying so (a resumed run retries it).
4. **Call** under the harness's adaptive limiter (back off on 429 / timeouts, honour ``Retry-After``),
   inside one EVALUATOR span with tokens and cost, connectors suppressed inside.
5. **Decode** with the best method the model supports: ``json_schema`` (native structured output;
   for vLLM and other OpenAI-compatible servers through ``ChatOpenAI(base_url=…)`` the schema goes in
   the request, so the server's guided decoding makes even a tiny model emit valid JSON), ``guided``
   (the schema in vLLM's ``extra_body`` ``structured_outputs``), ``tool`` (a forced tool call), or
   ``prompt`` (the schema in the prompt, JSON parsed from the text).
6. **Validate** with pydantic; on failure, up to ``max_repairs`` follow-up requests show the model its
   invalid reply and the validation error. Every attempt's raw text is kept. A reply that still does
   not validate, a refusal or an empty reply is an *error* result with the reason and the raw text —
   never a number.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from ragtrail import semconv
from ragtrail._exceptions import ConfigError, JudgeError
from ragtrail._log import logger
from ragtrail.evals._aio import judge_loop, on_judge_loop, run_sync
from ragtrail.evals._concurrency import AdaptiveLimiter
from ragtrail.evals._judge_cache import JudgeCache, cache_key
from ragtrail.evals._judge_limiter import JudgeLimiter
from ragtrail.evals._judge_result import Estimate, JudgeResult
from ragtrail.evals._structured import (
    OPENAI_COMPATIBLE,
    REFUSAL,
    ai_message,
    convo_dicts,
    detect_capabilities,
    human_message,
    json_schema_of,
    model_identity,
    parse_json_text,
    read_output,
    repair_prompt,
    to_messages,
)

METHODS = ("auto", "json_schema", "guided", "tool", "prompt")
"""Decoding methods a :class:`Judge` can use (``auto`` picks the best the model supports)."""

_CHARS_PER_TOKEN = 4.0


# ----------------------------------------------------------------------------------- Judge
class Judge:
    """An LLM judge over any LangChain chat model.

    Args:
        model: a LangChain chat model (``BaseChatModel``), e.g. ``ChatOpenAI(base_url="http://vllm:8000/v1",
            model="…", api_key="none")`` for vLLM or any OpenAI-compatible server.
        model_id: the identity used in cache keys and lineage (default ``provider/model-name``).
        temperature, seed: pinned (0 and 0) by default and recorded; trial ``i`` uses ``seed + i``.
        max_tokens: output budget per call (the schema's bounds keep guided decoders inside it).
        method: ``auto`` (best supported), ``json_schema``, ``guided``, ``tool`` or ``prompt``.
        cache: True (the default store), False, a store path/URL/Store, or a :class:`JudgeCache`.
        max_repairs: follow-up requests after an invalid reply (0 disables repair).
        max_concurrency: upper bound of the adaptive concurrency limit.
        max_retries, timeout_s: per-call retries of rate limits / timeouts / overload, and the timeout.
        limiter: the harness's :class:`~ragtrail.evals._concurrency.AdaptiveLimiter` to share (an
            evaluation passes its own so pipeline and judge calls back off together); default: a new
            one with ``max_concurrency`` and ``max_retries``.
        max_cost: USD budget for this judge's calls; calls that could pass it are not made.
        prices: ``{"input": usd_per_million, "output": usd_per_million}`` when the price table does not
            know the model (needed with ``max_cost`` for unknown models).
        logprobs: ask for token log-probabilities (kept as ``details["judge"]["logprob"]``, the verdict's
            sequence log-probability) for bare verdicts when the model supports them; off by default.
    """

    def __init__(
        self,
        model: Any,
        *,
        model_id: str | None = None,
        temperature: float = 0.0,
        seed: int | None = 0,
        max_tokens: int = 1024,
        method: str = "auto",
        cache: bool | str | JudgeCache | Any = True,
        max_repairs: int = 1,
        max_concurrency: int = 8,
        max_retries: int = 8,
        timeout_s: float = 120.0,
        max_cost: float | None = None,
        prices: Mapping[str, float] | None = None,
        logprobs: bool = False,
        limiter: AdaptiveLimiter | None = None,
    ) -> None:
        if isinstance(model, Judge):
            raise ConfigError("Judge(model) takes a LangChain chat model; pass the Judge itself where judge= is asked")
        if not (hasattr(model, "ainvoke") and hasattr(model, "invoke")):
            raise ConfigError(
                f"Judge needs a LangChain chat model (BaseChatModel), got {type(model).__name__}; "
                "e.g. ChatOpenAI(model=…, base_url=…) from langchain-openai"
            )
        if method not in METHODS:
            raise ConfigError(f"Judge(method={method!r}): use one of {', '.join(METHODS)}")
        if max_repairs < 0 or max_retries < 0:
            raise ConfigError("max_repairs and max_retries must be >= 0")
        if max_cost is not None and max_cost < 0:
            raise ConfigError(f"max_cost must be >= 0, got {max_cost}")
        self.model = model
        self.temperature = float(temperature)
        self.seed = seed
        self.max_tokens = int(max_tokens)
        self.max_repairs = int(max_repairs)
        self.max_retries = int(max_retries)
        self.timeout_s = float(timeout_s)
        self.max_cost = max_cost
        self.prices = dict(prices) if prices else None
        self.want_logprobs = logprobs
        self.capabilities = detect_capabilities(model)
        self.method = self._pick_method(method)
        self.provider, self.model_name = model_identity(model)
        self.model_id = model_id or f"{self.provider}/{self.model_name}"
        if cache is True:
            self.cache: JudgeCache | None = JudgeCache(None)
        elif cache is False or cache is None:
            self.cache = None
        elif isinstance(cache, JudgeCache):
            self.cache = cache
        else:
            self.cache = JudgeCache(cache)
        self.limiter = limiter or JudgeLimiter(max_concurrency, max_retries=max_retries)
        self._lock = threading.Lock()
        self.spent_usd = 0.0
        self._reserved_usd = 0.0
        self.calls = 0
        self.cache_hits = 0
        self.budget_skips = 0
        self._bound: dict[tuple[str, int, bool, str], Any] = {}
        if self.max_cost is not None and self._price() is None:
            raise JudgeError(
                f"Judge(max_cost={max_cost}): no price is known for {self.model_id!r}, so the budget cannot be "
                "enforced; pass prices={'input': USD_per_million_tokens, 'output': USD_per_million_tokens}"
            )

    # -- pickling (Ray workers, process pools) ----------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for k in ("_lock", "_bound"):
            state.pop(k, None)
        lim = state.pop("limiter")
        state["_limiter_args"] = (lim.max_concurrency, lim.max_retries)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        max_concurrency, max_retries = state.pop("_limiter_args")
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._bound = {}
        self.limiter = JudgeLimiter(max_concurrency, max_retries=max_retries)

    # -- construction helpers ---------------------------------------------------------------
    @classmethod
    def coerce(cls, judge: Any) -> Judge:
        """A Judge from ``judge=``: a Judge, a bare LangChain chat model, a ``"provider:model"`` string
        or a dict of ``init_chat_model`` arguments (what an eval YAML file can hold, e.g.
        ``{"model": "openai:my-model", "base_url": "http://vllm:8000/v1", "api_key": "none"}``; the
        keys ``temperature``, ``seed``, ``max_tokens``, ``method``, ``max_cost`` and ``prices`` go to
        the Judge)."""
        if isinstance(judge, Judge):
            return judge
        if judge is None:
            raise JudgeError(
                "this scorer needs an LLM judge: pass judge=Judge(chat_model) or judge=chat_model "
                "(any LangChain chat model, e.g. ChatOpenAI(base_url=…) for vLLM)"
            )
        if isinstance(judge, (str, Mapping)):
            spec: dict[str, Any] = {"model": judge} if isinstance(judge, str) else dict(judge)
            own = {k: spec.pop(k) for k in ("temperature", "seed", "max_tokens", "method", "max_cost", "prices",
                                              "model_id", "max_concurrency") if k in spec}  # fmt: skip
            try:
                from langchain.chat_models import init_chat_model
            except ImportError as exc:
                from ragtrail._exceptions import MissingDependencyError

                raise MissingDependencyError(
                    "a judge given by name needs langchain (pip install langchain and the provider's package, "
                    "e.g. langchain-openai); or pass a chat model object"
                ) from exc
            try:
                model = init_chat_model(**spec)
            except Exception as exc:
                raise JudgeError(f"cannot build the judge model from {judge!r}: {exc}") from exc
            return cls(model, **own)
        return cls(judge)

    def _pick_method(self, method: str) -> str:
        caps = self.capabilities
        if method != "auto":
            if method in ("json_schema", "guided") and not caps["structured_output"]:
                raise JudgeError(
                    f"Judge(method={method!r}): {type(self.model).__name__} has no native structured output; "
                    "use method='tool', 'prompt' or 'auto'"
                )
            if method == "tool" and not caps["tool_calling"]:
                raise JudgeError(f"Judge(method='tool'): {type(self.model).__name__} does not support tool calling")
            return method
        if caps["structured_output"]:
            return "json_schema"
        if caps["tool_calling"]:
            return "tool"
        return "prompt"

    def sampling_params(self, trial: int = 0) -> dict[str, Any]:
        """The sampling parameters of a call (recorded in details, part of the cache key)."""
        p: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.seed is not None:
            p["seed"] = int(self.seed) + int(trial)
        return p

    def describe(self) -> dict[str, Any]:
        """Lineage: model id, method, capabilities and pinned sampling parameters."""
        return {
            "model": self.model_id,
            "method": self.method,
            "capabilities": dict(self.capabilities),
            **self.sampling_params(0),
        }

    def _price(self) -> tuple[float, float] | None:
        if self.prices:
            return float(self.prices["input"]), float(self.prices["output"])
        try:
            from ragtrail.tracing._usage import _table

            price = _table().lookup(self.provider, self.model_name)
        except Exception:
            return None
        return None if price is None else (price.input, price.output)

    def cost_of(self, input_tokens: int | None, output_tokens: int | None) -> float | None:
        """USD for a call's tokens (None when the price is unknown)."""
        price = self._price()
        if price is None or (input_tokens is None and output_tokens is None):
            return None
        return (int(input_tokens or 0) * price[0] + int(output_tokens or 0) * price[1]) / 1e6

    # -- the runnable -------------------------------------------------------------------------
    def _runnable(self, schema_name: str, schema: dict[str, Any], trial: int, logprobs: bool) -> Any:
        key = (schema_name, trial, logprobs, json.dumps(schema, sort_keys=True))
        r = self._bound.get(key)
        if r is not None:
            return r
        model = self.model
        update: dict[str, Any] = {}
        fields = getattr(type(model), "model_fields", {})
        params = self.sampling_params(trial)
        if "temperature" in fields:
            update["temperature"] = params["temperature"]
        if "seed" in params and "seed" in fields:
            update["seed"] = params["seed"]
        for name in ("max_tokens", "max_output_tokens", "num_predict", "max_new_tokens"):
            if name in fields:
                update[name] = params["max_tokens"]
                break
        if logprobs and "logprobs" in fields:
            update["logprobs"] = True
        if update:
            try:
                model = model.model_copy(update=update)
            except Exception:
                logger.debug("ragtrail: could not pin sampling params on %s", type(model).__name__, exc_info=True)
        openai_like = type(self.model).__name__ in OPENAI_COMPATIBLE
        if self.method == "json_schema":
            if openai_like:
                rf = {"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema}}
                r = model.bind(response_format=rf)
            else:
                r = model.with_structured_output(schema, method="json_schema", include_raw=True)
        elif self.method == "guided":
            r = model.bind(extra_body={"structured_outputs": {"json": schema}, "guided_json": schema})
        elif self.method == "tool":
            tool = {
                "type": "function",
                "function": {"name": schema_name, "description": "Record the verdict.", "parameters": schema},
            }
            r = model.bind_tools([tool], tool_choice=schema_name)
        else:
            r = model
        self._bound[key] = r
        return r

    # -- one call ------------------------------------------------------------------------------
    def key_for(
        self,
        messages: Sequence[Mapping[str, str]],
        schema_model: type[BaseModel],
        *,
        scorer: str,
        scorer_version: str,
        trial: int = 0,
    ) -> str:
        """The cache key of a call (exposed for tests and tooling)."""
        return cache_key(
            model_id=self.model_id,
            messages=[dict(m) for m in messages],
            params=self.sampling_params(trial),
            schema=json_schema_of(schema_model),
            method=self.method,
            scorer=scorer,
            scorer_version=scorer_version,
            trial=trial,
        )

    def estimate_tokens(self, messages: Sequence[Mapping[str, str]]) -> int:
        """Input tokens of a call, estimated from its characters (about 4 per token)."""
        return math.ceil(sum(len(m.get("content", "")) for m in messages) / _CHARS_PER_TOKEN) + 4 * len(messages)

    async def acall(
        self,
        messages: Sequence[Mapping[str, str]],
        schema_model: type[BaseModel],
        *,
        scorer: str,
        scorer_version: str = "1",
        trial: int = 0,
        logprobs: bool = False,
        validate: Callable[[BaseModel], str | None] | None = None,
    ) -> JudgeResult:
        """Ask the judge; returns a :class:`JudgeResult` (never raises for model or parse failures).

        ``validate`` may add a semantic check (returns an error message or None); a failing check
        counts as an invalid reply and is repaired like a schema violation.
        """
        from ragtrail.tracing import set_content, span, suppress_instrumentation

        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
        schema = json_schema_of(schema_model)
        params = self.sampling_params(trial)
        key = self.key_for(msgs, schema_model, scorer=scorer, scorer_version=scorer_version, trial=trial)
        want_lp = bool(logprobs and self.capabilities["logprobs"] and self.want_logprobs)
        attrs: dict[str, Any] = {
            semconv.EVAL_SCORER: scorer,
            semconv.GEN_AI_OPERATION_NAME: "chat",
            semconv.GEN_AI_REQUEST_MODEL: self.model_name,
            semconv.GEN_AI_REQUEST_TEMPERATURE: params["temperature"],
            semconv.GEN_AI_REQUEST_MAX_TOKENS: params["max_tokens"],
            semconv.EVAL_JUDGE_METHOD: self.method,
            semconv.EVAL_JUDGE_TRIAL: trial,
        }
        if "seed" in params:
            attrs[semconv.GEN_AI_REQUEST_SEED] = params["seed"]
        with span(f"judge {scorer}", kind=semconv.EVALUATOR, attributes=attrs) as sp:
            set_content(sp, semconv.INPUT_VALUE, msgs)
            cached = self.cache.get(key) if self.cache is not None else None
            if cached is not None:
                with self._lock:
                    self.cache_hits += 1
                res = self._decode_cached(cached, schema_model, validate, key, params, trial)
                sp.set_attribute(semconv.EVAL_JUDGE_CACHE_HIT, True)
            else:
                sp.set_attribute(semconv.EVAL_JUDGE_CACHE_HIT, False)
                with suppress_instrumentation():
                    res = await self._call_fresh(msgs, schema, schema_model, validate, key, params, trial, want_lp)
                if res.called and res.usage:
                    from ragtrail.tracing import record_usage

                    record_usage(
                        sp,
                        provider=self.provider,
                        model=self.model_name,
                        input_tokens=res.usage.get("input_tokens"),
                        output_tokens=res.usage.get("output_tokens"),
                    )
                    if self.prices and res.cost_usd is not None and sp.is_recording():
                        sp.set_attribute(semconv.COST_USD, res.cost_usd)
                        sp.set_attribute(semconv.COST_SOURCE, "user_prices")
            sp.set_attribute(semconv.EVAL_JUDGE_ATTEMPTS, res.attempts)
            set_content(sp, semconv.OUTPUT_VALUE, res.raw[-1] if res.raw else None)
            if res.error and sp.is_recording():
                from opentelemetry.trace import Status, StatusCode

                sp.set_status(Status(StatusCode.ERROR, res.error[:512]))
        return res

    def call(self, messages: Sequence[Mapping[str, str]], schema_model: type[BaseModel], **kw: Any) -> JudgeResult:
        """Synchronous :meth:`acall` (safe inside a running event loop, e.g. Jupyter)."""
        return run_sync(self.acall(messages, schema_model, **kw))

    def _decode_cached(
        self,
        cached: Mapping[str, Any],
        schema_model: type[BaseModel],
        validate: Callable[[BaseModel], str | None] | None,
        key: str,
        params: dict[str, Any],
        trial: int,
    ) -> JudgeResult:
        raw = [str(r) for r in cached.get("raw", [])]
        parsed, err = (None, cached.get("error") or "empty cache entry")
        if raw and cached.get("refusal") is None:
            parsed, err = self._validate(raw[-1], schema_model, validate)
        elif cached.get("refusal") is not None:
            err = f"the judge refused: {cached['refusal']}"
        return JudgeResult(
            parsed, err, raw, self.method, self.model_id, params, cached=True, usage=dict(cached.get("usage", {})),
            cost_usd=None, attempts=len(raw) or 1, key=key, logprob=cached.get("logprob"), trial=trial, called=False,
        )  # fmt: skip

    def _validate(
        self, text: str, schema_model: type[BaseModel], validate: Callable[[BaseModel], str | None] | None
    ) -> tuple[BaseModel | None, str | None]:
        try:
            data = parse_json_text(text)
        except ValueError as exc:
            hint = " (it looks like a refusal)" if REFUSAL.search(text or "") else ""
            return None, f"the judge's reply is not JSON{hint}: {exc}"
        try:
            parsed = schema_model.model_validate(data)
        except ValidationError as exc:
            errs = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in exc.errors()[:5])
            return None, f"the judge's reply does not match the schema: {errs}"
        if validate is not None:
            msg = validate(parsed)
            if msg:
                return None, msg
        return parsed, None

    def _reserve(self, messages: Sequence[Mapping[str, str]]) -> float | None:
        """Reserve the worst-case cost of a call; None when it would pass ``max_cost``."""
        if self.max_cost is None:
            return 0.0
        worst = self.cost_of(self.estimate_tokens(messages), self.max_tokens) or 0.0
        with self._lock:
            if self.spent_usd + self._reserved_usd + worst > self.max_cost + 1e-12:
                self.budget_skips += 1
                return None
            self._reserved_usd += worst
        return worst

    async def _call_fresh(
        self,
        msgs: list[dict[str, str]],
        schema: dict[str, Any],
        schema_model: type[BaseModel],
        validate: Callable[[BaseModel], str | None] | None,
        key: str,
        params: dict[str, Any],
        trial: int,
        want_lp: bool,
    ) -> JudgeResult:
        runnable = self._runnable(schema_model.__name__, schema, trial, want_lp)
        convo: list[Any] = to_messages(self._with_instructions(msgs, schema))
        raws: list[str] = []
        usage = {"input_tokens": 0, "output_tokens": 0}
        got_usage = False
        cost_total: float | None = None
        logprob: float | None = None
        refusal: str | None = None
        parsed: BaseModel | None = None
        err: str | None = None
        attempts = 0
        for attempt in range(self.max_repairs + 1):
            reserved = self._reserve(convo_dicts(convo))
            if reserved is None:
                err = (
                    f"judge budget max_cost=${self.max_cost} reached (spent ${self.spent_usd:.6f}); this call was "
                    "not made — raise max_cost and resume the run"
                )
                if attempt == 0:
                    return JudgeResult(None, err, raws, self.method, self.model_id, params, key=key, trial=trial,
                                       attempts=0, called=False)  # fmt: skip
                break
            attempts += 1
            try:
                out = await self._invoke_with_retries(runnable, convo)
            except Exception as exc:
                self._settle(reserved, None)
                err = f"judge call failed: {type(exc).__name__}: {exc}"
                return JudgeResult(None, err, raws, self.method, self.model_id, params, usage=usage if got_usage else {},
                                   attempts=attempts, key=key, trial=trial, called=True)  # fmt: skip
            text, msg_usage, refusal_text, lp = read_output(out, self.method)
            with self._lock:
                self.calls += 1
            if msg_usage:
                got_usage = True
                usage["input_tokens"] += msg_usage.get("input_tokens", 0)
                usage["output_tokens"] += msg_usage.get("output_tokens", 0)
            c = self.cost_of(msg_usage.get("input_tokens"), msg_usage.get("output_tokens")) if msg_usage else None
            if c is None and self.max_cost is not None:  # no usage reported: charge the estimate
                c = self.cost_of(self.estimate_tokens(convo_dicts(convo)), max(1, len(text) // 4))
            self._settle(reserved, c)
            if c is not None:
                cost_total = (cost_total or 0.0) + c
            raws.append(text)
            if lp is not None:
                logprob = lp
            if refusal_text:
                refusal = refusal_text
                err = f"the judge refused: {refusal_text}"
                break
            parsed, err = self._validate(text, schema_model, validate)
            if parsed is not None:
                break
            if attempt < self.max_repairs:
                convo = [*convo, ai_message(text), human_message(repair_prompt(err or "", schema))]
        res = JudgeResult(
            parsed, err, raws, self.method, self.model_id, params, cached=False, usage=usage if got_usage else {},
            cost_usd=cost_total, attempts=attempts, key=key, logprob=logprob, trial=trial, called=True,
        )  # fmt: skip
        if self.cache is not None and raws:
            self.cache.put(
                key,
                {"raw": raws, "usage": res.usage, "logprob": logprob, "refusal": refusal, "model": self.model_id},
            )
        return res

    def _settle(self, reserved: float, actual: float | None) -> None:
        with self._lock:
            self._reserved_usd = max(0.0, self._reserved_usd - reserved)
            if actual is not None:
                self.spent_usd += actual

    def _with_instructions(self, msgs: list[dict[str, str]], schema: dict[str, Any]) -> list[dict[str, str]]:
        note = (
            "Reply with one JSON object only (no prose, no code fence) that follows this JSON schema:\n"
            + json.dumps(schema, separators=(",", ":"))
        )
        out = [dict(m) for m in msgs]
        if out and out[0]["role"] == "system":
            out[0]["content"] = out[0]["content"] + "\n\n" + note
        else:
            out.insert(0, {"role": "system", "content": note})
        return out

    async def _invoke_with_retries(self, runnable: Any, convo: list[Any]) -> Any:
        async def once() -> Any:
            t0 = time.monotonic()
            out = await asyncio.wait_for(on_judge_loop(_ainvoke_suppressed(runnable, convo)), timeout=self.timeout_s)
            observe = getattr(self.limiter, "observe_rtt", None)
            if observe is not None:
                observe(time.monotonic() - t0)
            return out

        return await self.limiter.acall(once)

    def stats(self) -> dict[str, Any]:
        """Calls made, cache hits (this process), budget skips, spend and the current concurrency limit."""
        out: dict[str, Any] = {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "budget_skips": self.budget_skips,
            "spent_usd": self.spent_usd,
            "concurrency_limit": self.limiter.limit,
            "backoffs": self.limiter.n_backoffs,
            "retries": self.limiter.n_retries,
        }
        if self.cache is not None:
            out["cache"] = self.cache.stats.as_dict()
        return out

    def __repr__(self) -> str:
        return f"Judge({self.model_id!r}, method={self.method!r}, temperature={self.temperature}, seed={self.seed})"


async def _ainvoke_suppressed(runnable: Any, convo: list[Any]) -> Any:
    from ragtrail.tracing import suppress_instrumentation

    with suppress_instrumentation():
        return await runnable.ainvoke(convo)


__all__ = [
    "METHODS",
    "Estimate",
    "Judge",
    "JudgeLimiter",
    "JudgeResult",
    "detect_capabilities",
    "json_schema_of",
    "judge_loop",
    "parse_json_text",
    "run_sync",
]
