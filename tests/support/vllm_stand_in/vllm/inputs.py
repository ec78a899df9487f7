"""``TokensPrompt``: a dict, as vLLM's TypedDict makes."""

from typing import Any


def TokensPrompt(**fields: Any) -> dict[str, Any]:  # noqa: N802 (vLLM's name)
    return dict(fields)
