"""The command line as a whole: every command is reachable and has help text."""

from click.testing import CliRunner

from scalefinder.cli import COMMANDS, SHORT_HELP, cli


def test_every_command_has_help():
    runner = CliRunner()
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output
        assert SHORT_HELP.get(name), f"{name} has no one-line help"


def test_each_command_help_runs():
    runner = CliRunner()
    for name in COMMANDS:
        result = runner.invoke(cli, [name, "--help"])
        assert result.exit_code == 0, (name, result.output)
        assert "Usage" in result.output
