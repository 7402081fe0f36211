"""The model catalog: offered models and context windows."""

from __future__ import annotations

from typing import Any

import pytest

from chinwag.config import DEFAULT_CONTEXT_WINDOW, Settings
from chinwag.llm.catalog import ModelCatalog, ModelInfo, known_context_window


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)


def test_vision_is_configured_or_known() -> None:
    catalog = ModelCatalog(_settings(models="llava:7b:4096:vision,qwen2.5:32768,gpt-4o-mini,gpt-3.5-turbo"))
    assert [(m.id, m.context_window, m.vision) for m in catalog.models()] == [
        ("llava:7b", 4096, True),
        ("qwen2.5", 32768, False),
        ("gpt-4o-mini", 128_000, True),
        ("gpt-3.5-turbo", 16_385, False),
    ]
    assert catalog.accepts_images("gpt-4o-2024-08-06")
    assert catalog.accepts_images("openai/gpt-4.1")
    assert not catalog.accepts_images("o3-mini")
    with pytest.raises(ValueError, match="id:window:vision"):
        _settings(models="llava:vision")


def test_configured_known_and_unknown_windows() -> None:
    catalog = ModelCatalog(_settings(models="gpt-4o,llama3.2-3b:8192,my-model,gpt-4.1-mini:50000"))
    assert catalog.models() == [
        ModelInfo(id="gpt-4o", context_window=128_000, default=True, vision=True),
        ModelInfo(id="llama3.2-3b", context_window=8192, default=False, vision=False),
        ModelInfo(id="my-model", context_window=DEFAULT_CONTEXT_WINDOW, default=False, vision=False),
        ModelInfo(id="gpt-4.1-mini", context_window=50_000, default=False, vision=True),
    ]
    assert catalog.default_model == "gpt-4o"
    assert catalog.is_offered("my-model")
    assert not catalog.is_offered("gpt-5")
    # A model no longer offered still has a window (old sessions keep working).
    assert catalog.context_window("gpt-5") == 400_000
    assert catalog.context_window("something-else") == DEFAULT_CONTEXT_WINDOW


def test_default_model_setting_marks_exactly_one() -> None:
    catalog = ModelCatalog(_settings(models="gpt-4o,o3", default_model="o3"))
    assert [m.id for m in catalog.models() if m.default] == ["o3"]
    assert catalog.default_model == "o3"


def test_known_windows_cover_snapshots_and_prefixes() -> None:
    assert known_context_window("gpt-4o-mini") == 128_000
    assert known_context_window("gpt-4o-2024-08-06") == 128_000
    assert known_context_window("gpt-4.1-nano-2025-04-14") == 1_047_576
    assert known_context_window("gpt-5-mini") == 400_000
    assert known_context_window("gpt-5.1-codex") == 400_000
    assert known_context_window("o4-mini-2025-04-16") == 200_000
    assert known_context_window("openai/gpt-4o") == 128_000
    assert known_context_window("GPT-4o") == 128_000
    assert known_context_window("gpt-4") == 8_192
    # `gpt-4.5-...` is its own family, not a `gpt-4` snapshot; an unknown family is None.
    assert known_context_window("gpt-4.5-preview-2025-02-27") == 128_000
    assert known_context_window("gpt-4z") is None
    assert known_context_window("mistral-large") is None
