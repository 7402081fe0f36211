from pathlib import Path

import pytest

from chinwag.config import ModelSpec, Settings, SettingsError, load_or_create_secret, load_settings


def test_defaults_follow_the_contract(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CHINWAG_DATABASE_URL", "CHINWAG_MODELS", "CHINWAG_REGISTRATION", "CHINWAG_DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert settings.database_url is None
    assert settings.data_dir == Path(".chinwag").resolve()  # absolute, whatever the working directory later is
    assert settings.log_level == "INFO"
    assert settings.log_format == "text"
    assert settings.metrics is False
    assert settings.shutdown_grace_s == 30
    assert settings.registration == "first_user"
    assert settings.llm_api == "chat_completions"
    assert settings.max_upload_bytes == 20 * 1024 * 1024
    assert settings.max_message_chars == 100_000
    assert settings.cors_origins == ()
    assert len(settings.models) == 1
    assert settings.resolved_default_model == settings.models[0].id


def test_models_with_windows_and_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHINWAG_MODELS", "llama3:8192, gpt-4o ,qwen:32768,llama3.2:3b,mistral:7b:65536")
    monkeypatch.setenv("CHINWAG_DEFAULT_MODEL", "gpt-4o")
    monkeypatch.setenv("CHINWAG_CORS_ORIGINS", "http://a.example, http://b.example")
    settings = load_settings(_env_file=None)
    assert settings.models == (
        ModelSpec(id="llama3", context_window=8192),
        ModelSpec(id="gpt-4o"),
        ModelSpec(id="qwen", context_window=32768),
        ModelSpec(id="llama3.2:3b"),
        ModelSpec(id="mistral:7b", context_window=65536),
    )
    assert settings.resolved_default_model == "gpt-4o"
    assert settings.cors_origins == ("http://a.example", "http://b.example")


def test_openai_variables_have_no_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:11434/v1")
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "https://example.openai.azure.com")
    settings = load_settings(_env_file=None)
    assert settings.openai_base_url == "http://127.0.0.1:11434/v1"
    assert settings.uses_azure


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHINWAG_MAX_UPLOAD_BYTES", "lots"),
        ("CHINWAG_MAX_UPLOAD_BYTES", "0"),
        ("CHINWAG_REGISTRATION", "sometimes"),
        ("CHINWAG_LLM_API", "completions"),
        ("CHINWAG_MODELS", "gpt-4o:0"),
        ("CHINWAG_MODELS", "a,b,a"),
        ("CHINWAG_MODELS", " , "),
        ("CHINWAG_MAX_MESSAGE_CHARS", "-5"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        load_settings(_env_file=None)


def test_default_model_must_be_offered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHINWAG_MODELS", "a,b")
    monkeypatch.setenv("CHINWAG_DEFAULT_MODEL", "c")
    with pytest.raises(SettingsError, match="CHINWAG_DEFAULT_MODEL"):
        load_settings(_env_file=None)


def test_settings_are_frozen() -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(Exception, match="frozen"):
        settings.__setattr__("max_turns", 3)


def test_secret_is_generated_once_and_kept(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    first = load_or_create_secret(settings)
    assert len(first) >= 32
    assert load_or_create_secret(settings) == first
    assert (tmp_path / "data" / "secret_key").stat().st_mode & 0o777 == 0o600
    assert load_or_create_secret(Settings(_env_file=None, data_dir=tmp_path / "other")) != first


def test_configured_secret_wins(tmp_path: Path) -> None:
    settings = Settings(_env_file=None, data_dir=tmp_path, secret_key="s" * 40)
    assert load_or_create_secret(settings) == "s" * 40
    assert not (tmp_path / "secret_key").exists()


def test_a_short_secret_key_is_a_clear_start_up_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"CHINWAG_SECRET_KEY: .*at least 32 bytes"):
        load_settings(_env_file=None, secret_key="x" * 31)
    assert load_settings(_env_file=None, secret_key="é" * 16).secret_key is not None  # 32 bytes in UTF-8
    (tmp_path / "secret_key").write_text("short")
    with pytest.raises(SettingsError, match="shorter than 32 bytes"):
        load_or_create_secret(Settings(_env_file=None, data_dir=tmp_path))


def test_the_generated_secret_is_long_enough(tmp_path: Path) -> None:
    secret = load_or_create_secret(Settings(_env_file=None, data_dir=tmp_path))
    assert load_settings(_env_file=None, secret_key=secret).secret_key is not None


def test_the_run_lease_must_outlast_two_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHINWAG_RUN_HEARTBEAT_S", "5")
    monkeypatch.setenv("CHINWAG_RUN_STALE_S", "6")
    with pytest.raises(SettingsError, match="CHINWAG_RUN_STALE_S"):
        load_settings(_env_file=None)
    monkeypatch.setenv("CHINWAG_RUN_STALE_S", "11")
    settings = load_settings(_env_file=None)
    assert (settings.run_heartbeat_s, settings.run_stale_s, settings.run_sweep_s) == (5.0, 11.0, 2.0)
