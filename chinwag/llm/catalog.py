"""The models offered to users and their context windows.

Whether a model accepts images comes from `CHINWAG_MODELS` (`id:window:vision`), else the known OpenAI vision models
below. Windows come, in order, from `CHINWAG_MODELS` (`id:window`), from the table of known OpenAI models below (dated
snapshots such as `gpt-4o-2024-08-06` take their family's window), else `DEFAULT_CONTEXT_WINDOW`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from chinwag.config import DEFAULT_CONTEXT_WINDOW, Settings

# Approximate public numbers (input + output tokens). Longest matching prefix wins, so `gpt-4o-mini-...` is not
# read as `gpt-4o`.
KNOWN_CONTEXT_WINDOWS: dict[str, int] = {
    "gpt-3.5-turbo": 16_385,
    "gpt-4": 8_192,
    "gpt-4-32k": 32_768,
    "gpt-4-turbo": 128_000,
    "gpt-4.5-preview": 128_000,
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "chatgpt-4o-latest": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.1-mini": 1_047_576,
    "gpt-4.1-nano": 1_047_576,
    "gpt-5": 400_000,
    "gpt-5-mini": 400_000,
    "gpt-5-nano": 400_000,
    "gpt-5-chat": 128_000,
    "gpt-5-chat-latest": 128_000,
    "gpt-5.1": 400_000,
    "gpt-5.2": 400_000,
    "gpt-oss-20b": 131_072,
    "gpt-oss-120b": 131_072,
    "o1": 200_000,
    "o1-mini": 128_000,
    "o1-pro": 200_000,
    "o3": 200_000,
    "o3-mini": 200_000,
    "o3-pro": 200_000,
    "o4-mini": 200_000,
    "codex-mini-latest": 200_000,
}


def known_context_window(model_id: str) -> int | None:
    """The window of a known OpenAI model (or a dated snapshot / `provider/` prefixed id of one), else None."""
    name = model_id.rsplit("/", 1)[-1].strip().lower()
    if name in KNOWN_CONTEXT_WINDOWS:
        return KNOWN_CONTEXT_WINDOWS[name]
    best: str | None = None
    for known in KNOWN_CONTEXT_WINDOWS:
        # `gpt-4o-2024-08-06` and `gpt-5.1-codex` belong to their family; `gpt-4.5` is not `gpt-4`.
        if name.startswith(known + "-") and (best is None or len(known) > len(best)):
            best = known
    return KNOWN_CONTEXT_WINDOWS[best] if best is not None else None


# The known OpenAI models (of `KNOWN_CONTEXT_WINDOWS`) that accept image input; `o3-mini` is its own family, not
# `o3`'s.
KNOWN_VISION: frozenset[str] = frozenset(
    {
        "gpt-4-turbo",
        "gpt-4.5-preview",
        "gpt-4o",
        "gpt-4o-mini",
        "chatgpt-4o-latest",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "gpt-5-chat",
        "gpt-5-chat-latest",
        "gpt-5.1",
        "gpt-5.2",
        "o1",
        "o1-pro",
        "o3",
        "o3-pro",
        "o4-mini",
    }
)


def _family(model_id: str, known: Iterable[str]) -> str | None:
    """The known model this id names: itself, or the longest known prefix followed by `-` (a dated snapshot)."""
    name = model_id.rsplit("/", 1)[-1].strip().lower()
    best: str | None = None
    for family in known:
        if name == family:
            return family
        # `gpt-4o-2024-08-06` and `gpt-5.1-codex` belong to their family; `gpt-4.5` is not `gpt-4`.
        if name.startswith(family + "-") and (best is None or len(family) > len(best)):
            best = family
    return best


@dataclass(frozen=True)
class ModelInfo:
    """A model as `GET /config` shows it."""

    id: str
    context_window: int
    default: bool
    vision: bool


class ModelCatalog:
    """The offered models (`CHINWAG_MODELS`) and the context window of any model id."""

    def __init__(self, settings: Settings) -> None:
        self._default = settings.resolved_default_model
        self._configured = {m.id: m.context_window for m in settings.models}
        self._vision = {m.id: m.vision for m in settings.models if m.vision is not None}
        self._models = [
            ModelInfo(
                id=m.id,
                context_window=self.context_window(m.id),
                default=m.id == self._default,
                vision=self.accepts_images(m.id),
            )
            for m in settings.models
        ]

    def models(self) -> list[ModelInfo]:
        """The offered models, in configuration order; exactly one is the default."""
        return list(self._models)

    @property
    def default_model(self) -> str:
        return self._default

    def is_offered(self, model_id: str) -> bool:
        return model_id in self._configured

    def context_window(self, model_id: str) -> int:
        """The configured window, else the known one, else `DEFAULT_CONTEXT_WINDOW` (also for models no longer
        offered: a session keeps working after its model is dropped from the configuration)."""
        configured = self._configured.get(model_id)
        if configured is not None:
            return configured
        return known_context_window(model_id) or DEFAULT_CONTEXT_WINDOW

    def accepts_images(self, model_id: str) -> bool:
        """Configured as `id:window:vision`, else a known OpenAI vision model."""
        configured = self._vision.get(model_id)
        if configured is not None:
            return configured
        return _family(model_id, KNOWN_CONTEXT_WINDOWS) in KNOWN_VISION
