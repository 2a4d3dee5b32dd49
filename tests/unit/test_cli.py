from __future__ import annotations

from click.testing import CliRunner

from aurora_streams.cli import main


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("broker", "topics", "worker", "simulate", "dev", "tail", "bench", "settings"):
        assert command in result.output


def test_settings_command_prints_json() -> None:
    result = CliRunner().invoke(main, ["settings"], env={"AURORA_PARTITIONS": "6"})
    assert result.exit_code == 0 and '"partitions": 6' in result.output


def test_bad_setting_is_a_clear_error() -> None:
    result = CliRunner().invoke(main, ["settings"], env={"AURORA_PARTITIONS": "zero"})
    assert result.exit_code != 0 and "partitions" in result.output


def test_settings_masks_the_database_password() -> None:
    url = "postgresql://aurora:s3cret-pass@db.example:5432/aurora"
    result = CliRunner().invoke(main, ["settings"], env={"AURORA_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert "s3cret-pass" not in result.output
    assert "postgresql://aurora:***@db.example:5432/aurora" in result.output
