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


def test_a_command_line_mistake_is_one_error_line_with_exit_2():
    runner = CliRunner()
    cases = {
        ("analyze", "--headroom", "abc", "."): ("'--headroom'", "scalefinder analyze --help"),
        ("analyze",): ("Missing argument 'RUN_DIR'", "scalefinder analyze --help"),
        ("no-such-command",): ("No such command", "scalefinder --help"),
        ("--no-such-flag", "runs"): ("No such option", "scalefinder --help"),
    }
    for args, (what, where) in cases.items():
        result = runner.invoke(cli, list(args), prog_name="scalefinder")
        lines = result.output.strip().splitlines()
        assert result.exit_code == 2, (args, result.output)
        assert len(lines) == 1 and lines[0].startswith("Error: "), (args, result.output)
        assert what in lines[0] and f"(see '{where}')" in lines[0], (args, result.output)
