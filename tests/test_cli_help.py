"""Every command has help with an example; every module imports."""

from __future__ import annotations

import importlib
import pkgutil

import pytest
from click.testing import CliRunner

import difftrt
from difftrt.cli import main


@pytest.mark.parametrize("command", sorted(main.commands))
def test_help(command):
    result = CliRunner().invoke(main, [command, "--help"])
    assert result.exit_code == 0
    assert f"difftrt {command}" in result.output  # an example line


def test_commands():
    assert {"export", "sample", "bench", "init-checkpoint"} <= set(main.commands)


def test_import_every_module():
    pytest.importorskip("torch")
    for info in pkgutil.walk_packages(difftrt.__path__, "difftrt."):
        importlib.import_module(info.name)
