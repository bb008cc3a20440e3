"""What a call cost, from its usage: the policy's own price for the model when it has one
(private deployments), else genai-prices. A model nobody prices costs *unknown* (None), never 0.
"""

from __future__ import annotations

from functools import lru_cache

from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from corral.gateway.llm.dialects import Usage
from corral.policy.schema import Provider

_PROVIDER_IDS = {"openai": "openai", "anthropic": "anthropic"}


def cost_usd(provider: Provider, model: str, usage: Usage) -> float | None:
    if usage.input_tokens is None and usage.output_tokens is None:
        return None
    total_in, out = usage.input_tokens or 0, usage.output_tokens or 0
    own = provider.prices.get(model)
    if own is not None:
        fresh = total_in - usage.cache_read_tokens - usage.cache_write_tokens
        read = own.cache_read if own.cache_read is not None else own.input
        write = own.cache_write if own.cache_write is not None else own.input
        return (fresh * own.input + usage.cache_read_tokens * read + usage.cache_write_tokens * write
                + out * own.output) / 1_000_000
    provider_id = _PROVIDER_IDS.get(provider.kind)
    if provider_id is None or not _known(provider_id, model):
        return None
    price = calc_price(PriceUsage(input_tokens=total_in, output_tokens=out,
                                  cache_read_tokens=usage.cache_read_tokens or None,
                                  cache_write_tokens=usage.cache_write_tokens or None),
                       model_ref=model, provider_id=provider_id)
    return float(price.total_price)


@lru_cache(maxsize=512)
def _known(provider_id: str, model: str) -> bool:
    try:
        calc_price(PriceUsage(input_tokens=1), model_ref=model, provider_id=provider_id)
    except LookupError:
        return False
    return True
