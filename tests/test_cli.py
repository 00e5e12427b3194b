"""The `mass` command line (mass/cli.py): every command is listed and explains itself, and a
mistake is one `error:` line with exit status 2, before any work starts."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
from transformers.utils import logging as hf_logging

from mass.cli import COMMANDS, _config_class, command_parser, main, quiet_libraries


def test_no_arguments_print_the_usage_and_fail_help_succeeds(capsys):
    assert main([]) == 2
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert f"  {name} " in out  # every command, with its one-line summary


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_commands_help_lists_its_settings(name, capsys):
    with pytest.raises(SystemExit) as stop:
        command_parser(name).parse_args(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: mass {name}")
    for field in dataclasses.fields(_config_class(COMMANDS[name])):
        assert field.name in text, field.name


@pytest.mark.parametrize("argv, message", [
    (["trian"], "unknown command 'trian'"),
    (["bench"], "unknown command 'bench'"),
    (["bench", "nothing"], "unknown command 'bench nothing'"),
    (["eval", "limit=many"], "limit"),
    (["eval", "no_such_setting=1"], "no_such_setting"),
    (["eval", "--method", "mass", "--train-data", "math-train"], "does not use train_data"),
])
def test_mistakes_are_one_error_line_and_status_2(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err
    assert "Traceback" not in err


def test_libraries_are_quiet_unless_verbose():
    """Normal runs hide the libraries' deprecation warnings, log lines and weight-loading bars;
    -v shows them."""
    before = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            quiet_libraries(verbose=False)
            warnings.warn("transformers says this will change", FutureWarning)
            assert seen == []
            assert hf_logging.get_verbosity() == hf_logging.ERROR and not hf_logging.is_progress_bar_enabled()
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            quiet_libraries(verbose=True)
            warnings.warn("transformers says this will change", FutureWarning)
            assert [w.category for w in seen] == [FutureWarning]
            assert hf_logging.get_verbosity() == hf_logging.WARNING and hf_logging.is_progress_bar_enabled()
    finally:
        hf_logging.set_verbosity(before[0])
        (hf_logging.enable_progress_bar if before[1] else hf_logging.disable_progress_bar)()
