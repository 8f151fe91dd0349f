from dataclasses import fields

from tui.config import Settings, load_config, parse_settings, render_toml


def test_missing_file_gives_defaults(config_file):
    loaded = load_config(config_file)
    assert loaded.settings == Settings()
    assert loaded.warnings == ()


def test_values_are_read(config_file):
    config_file.write_text("[chat]\ntemperature = 0.2\nmax_tokens = 64\n[engine]\nn_gpu_layers = -1\n")
    settings = load_config(config_file).settings
    assert settings.chat.temperature == 0.2
    assert settings.chat.max_tokens == 64
    assert settings.engine.n_gpu_layers == -1


def test_malformed_file_names_the_file_and_falls_back(config_file):
    config_file.write_text("[chat\ntemperature = ")
    loaded = load_config(config_file)
    assert loaded.settings == Settings()
    assert len(loaded.warnings) == 1
    assert str(config_file) in loaded.warnings[0]
    assert "invalid TOML" in loaded.warnings[0] and "Fix the syntax" in loaded.warnings[0]


def test_bad_value_names_key_and_fix_and_keeps_the_rest(config_file):
    config_file.write_text('[chat]\ntemperature = "hot"\nmax_tokens = 99\n[engine]\nn_ctx = 10\n')
    loaded = load_config(config_file)
    assert loaded.settings.chat.temperature == Settings().chat.temperature
    assert loaded.settings.chat.max_tokens == 99
    assert loaded.settings.engine.n_ctx == Settings().engine.n_ctx
    temperature, n_ctx = loaded.warnings
    assert "[chat] temperature" in temperature and "set it to a number" in temperature
    assert "[engine] n_ctx" in n_ctx and "out of range" in n_ctx


def test_unknown_keys_and_sections_are_reported(config_file):
    config_file.write_text("[chat]\ntemprature = 1.0\n[colours]\nx = 1\n")
    warnings = load_config(config_file).warnings
    assert any("temprature" in w and "valid keys" in w for w in warnings)
    assert any("[colours]" in w for w in warnings)


def test_bool_is_not_accepted_as_a_number(tmp_path):
    _, warnings = parse_settings({"chat": {"top_k": True}}, tmp_path / "c.toml")
    assert warnings and "whole number" in warnings[0]


def test_rendered_reference_round_trips_and_documents_every_key(tmp_path):
    text = render_toml(Settings())
    path = tmp_path / "config.toml"
    path.write_text(text)
    loaded = load_config(path)
    assert loaded.warnings == () and loaded.settings == Settings()
    for section in fields(Settings):
        for key in fields(section.default_factory):
            assert f"\n{key.name} = " in text
            assert key.metadata["doc"] in text


def test_readme_config_reference_is_current():
    from support import ROOT

    readme = (ROOT / "README.md").read_text()
    assert render_toml(Settings()) in readme, (
        "README's config reference is stale: paste `zootui config show --defaults`"
    )
