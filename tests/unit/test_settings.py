from __future__ import annotations

import pytest

from aurora_streams.errors import ConfigError
from aurora_streams.settings import load_settings


def test_defaults_are_safe(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in list(__import__("os").environ):
        if key.startswith("AURORA_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert s.bootstrap_servers == "127.0.0.1:9092" and s.partitions == 4
    assert s.processing_guarantee == "at_least_once" and s.web_bind == "127.0.0.1"
    assert (
        s.topics.raw == "meter.readings.raw" and s.changelog_topic == "aurora-streams-device_state-changelog"
    )


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AURORA_BROKER_URL", "kafka://a:1;kafka://b:2")
    monkeypatch.setenv("AURORA_PARTITIONS", "8")
    monkeypatch.setenv("AURORA_DEVICE_MAX_POWER_KW", '{"m1": 250}')
    monkeypatch.setenv("AURORA_DEVICE_ZONES", '{"m1": "Australia/Brisbane"}')
    monkeypatch.setenv("AURORA_REGISTER_MODULI_KWH", "[1000000, 100000]")
    s = load_settings()
    assert s.bootstrap_servers == "a:1,b:2" and s.partitions == 8
    assert s.rules.max_power_for("m1") == 250 and s.rules.max_power_for("m2") == 100
    assert s.rules.register_moduli_kwh == (100_000.0, 1_000_000.0)
    assert s.policy.device_zones == {"m1": "Australia/Brisbane"}


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("AURORA_PARTITIONS", "0"),
        ("AURORA_BROKER_URL", "kafka://nohost"),
        ("AURORA_OUTPUT_ENCODING", "xml"),
        ("AURORA_MAX_POWER_KW", "-1"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    monkeypatch.setenv(var, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert var.removeprefix("AURORA_").lower() in str(info.value)
