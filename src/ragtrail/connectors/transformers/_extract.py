"""Small extractors for the transformers connector: each reads one concern and never raises."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ragtrail import semconv
from ragtrail.tracing import model_display_name

_SAMPLING = (
    ("temperature", semconv.GEN_AI_REQUEST_TEMPERATURE, float),
    ("top_p", semconv.GEN_AI_REQUEST_TOP_P, float),
    ("top_k", semconv.GEN_AI_REQUEST_TOP_K, int),
    ("max_new_tokens", semconv.GEN_AI_REQUEST_MAX_TOKENS, int),
    ("num_return_sequences", semconv.GEN_AI_REQUEST_N, int),
)


def model_name(model: Any) -> str:
    """The name the model was loaded under (a local directory's stable name, never its path: see
    :func:`ragtrail.tracing.model_display_name`), else its config's model type, else its class name."""
    for source in (model, getattr(model, "config", None)):
        name = getattr(source, "name_or_path", None) or getattr(source, "_name_or_path", None)
        if isinstance(name, str) and name:
            return model_display_name(name)
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return str(model_type or type(model).__name__)


def generation_config(model: Any, kwargs: Mapping[str, Any]) -> Any:
    return kwargs.get("generation_config") or getattr(model, "generation_config", None)


def request_attributes(model: Any, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Sampling parameters: a keyword argument wins over the (passed or model's) generation config."""
    gc = generation_config(model, kwargs)
    attrs: dict[str, Any] = {}
    do_sample = kwargs.get("do_sample", getattr(gc, "do_sample", None))
    for name, key, cast in _SAMPLING:
        if name in ("temperature", "top_p", "top_k") and do_sample is False:
            continue  # greedy/beam decoding ignores them
        value = kwargs.get(name, getattr(gc, name, None))
        if value is None:
            continue
        try:
            attrs[key] = cast(value)
        except (TypeError, ValueError):
            continue
    if do_sample is False and kwargs.get("num_beams", getattr(gc, "num_beams", 1) or 1) == 1:
        attrs[semconv.GEN_AI_REQUEST_TEMPERATURE] = 0.0
    return attrs


def eos_ids(model: Any, kwargs: Mapping[str, Any]) -> list[int]:
    gc = generation_config(model, kwargs)
    eos = kwargs.get("eos_token_id", getattr(gc, "eos_token_id", None))
    if eos is None:
        eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if eos is None:
        return []
    if hasattr(eos, "tolist"):
        eos = eos.tolist()
    if isinstance(eos, int):
        return [eos]
    try:
        return [int(e) for e in eos]
    except TypeError:
        return []


def prompt_inputs(args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> tuple[Any, Any, Any]:
    """(input_ids, inputs_embeds, attention_mask) from a ``generate`` call (any may be None)."""
    ids = kwargs.get("input_ids")
    inputs = args[0] if args else kwargs.get("inputs")
    if ids is None and inputs is not None and not getattr(inputs, "is_floating_point", lambda: True)():
        ids = inputs
    embeds = kwargs.get("inputs_embeds")
    return ids, embeds, kwargs.get("attention_mask")


def sequences(output: Any) -> Any:
    """The generated sequences tensor from a tensor or a ``GenerateOutput``."""
    seq = getattr(output, "sequences", None)
    return seq if seq is not None else output


def token_counts(model: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], output: Any) -> dict[str, Any] | None:
    """Input tokens, output tokens (per row, up to and including the first EOS) and finish reasons.

    Everything is computed on the model's device and brought to the host in one transfer.
    """
    import torch

    seqs = sequences(output)
    if not isinstance(seqs, torch.Tensor) or seqs.dim() != 2:
        return None
    ids, embeds, mask = prompt_inputs(args, kwargs)
    is_enc_dec = bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))
    if is_enc_dec:
        start = 1  # the decoder starts with its start token
        dec_in = kwargs.get("decoder_input_ids")
        if isinstance(dec_in, torch.Tensor) and dec_in.dim() == 2:
            start = dec_in.shape[1]
        new = seqs[:, start:]
    elif isinstance(ids, torch.Tensor) and ids.dim() == 2:
        new = seqs[:, ids.shape[1] :]
    else:
        new = seqs  # from inputs_embeds (or nothing): the output holds only new tokens
    parts = []
    if isinstance(mask, torch.Tensor):
        parts.append(mask.to(torch.long).sum().reshape(1))
    elif isinstance(ids, torch.Tensor):
        parts.append(torch.tensor([ids.numel()], device=seqs.device))
    elif isinstance(embeds, torch.Tensor) and embeds.dim() == 3:
        parts.append(torch.tensor([embeds.shape[0] * embeds.shape[1]], device=seqs.device))
    n_rows, width = new.shape
    eos = eos_ids(model, kwargs)
    if width == 0:
        counts = torch.zeros(n_rows, dtype=torch.long, device=seqs.device)
        stopped = torch.zeros(n_rows, dtype=torch.long, device=seqs.device)
    elif eos:
        hit = torch.isin(new, torch.tensor(eos, device=new.device, dtype=new.dtype))
        has = hit.any(dim=1)
        first = hit.to(torch.int8).argmax(dim=1)
        counts = torch.where(has, first + 1, torch.full_like(first, width)).to(torch.long)
        stopped = has.to(torch.long)
    else:
        counts = torch.full((n_rows,), width, dtype=torch.long, device=seqs.device)
        stopped = torch.zeros(n_rows, dtype=torch.long, device=seqs.device)
    host = torch.cat([p.to(seqs.device) for p in parts] + [counts, stopped]).tolist()  # the one transfer
    input_tokens = int(host[0]) if parts else None
    rest = host[len(parts) :]
    per_row = [int(c) for c in rest[:n_rows]]
    finish = ["stop" if s else "length" for s in rest[n_rows:]]
    return {
        "input_tokens": input_tokens,
        "output_tokens": sum(per_row),
        "per_row": per_row,
        "finish_reasons": finish,
        "new_tokens": new,
    }


def device_of(model: Any) -> Any:
    """The model's device map (several devices) or device."""
    dm = getattr(model, "hf_device_map", None)
    if isinstance(dm, Mapping) and len(set(map(str, dm.values()))) > 1:
        return dm
    return getattr(model, "device", None)
