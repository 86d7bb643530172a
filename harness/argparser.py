"""The harness's sub-commands' argument parser: argparse whose errors (an unknown flag, a
number that is not one, a missing argument) are llmlib's bad input, one line and exit
status 2 (``harness.cli.one_line`` says it), not argparse's usage block."""

from __future__ import annotations

import argparse
from typing import NoReturn

from llmlib.errors import ConfigError


class ArgParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` raising ``ConfigError`` where it would print its usage
    and exit; sub-parsers (``add_subparsers``) are of this class too."""

    def error(self, message: str) -> NoReturn:  # "serve: ... (python -m harness serve --help)"
        if message.endswith("expected one argument"):  # argparse takes "--x --y=1" as two flags
            message += " (a value that starts with '-' goes after '=': --flag=VALUE)"
        raise ConfigError(f"{self.prog.split()[-1]}: {message} ({self.prog} --help)")
