"""Stage settings parsing and the CLI's error contract."""

import dataclasses
import subprocess
import sys

import pytest

from maskfield.errors import MaskfieldError
from maskfield.settings import parse_settings


@dataclasses.dataclass
class Inner:
    k: int = 3


@dataclasses.dataclass
class Outer:
    lr: float = 5e-4
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_settings_fill_defaults_and_nested_sections():
    s = parse_settings(Outer, '{"inner": {"k": 7}}')
    assert s.lr == 5e-4 and s.inner.k == 7
    assert parse_settings(Outer, "") == Outer()


@pytest.mark.parametrize(
    "text, message",
    [('{"lr": 1, "typo": 2}', "Unknown key"), ("[1]", "must be a JSON object"), ("{bad", "not valid JSON"),
     ('{"inner": {"q": 1}}', r"--settings.inner")],
)
def test_settings_refuse_typos_and_non_objects(text, message):
    with pytest.raises(MaskfieldError, match=message):
        parse_settings(Outer, text)


def test_cli_without_command_prints_help_and_fails():
    out = subprocess.run([sys.executable, "-m", "maskfield"], capture_output=True, text=True)
    assert out.returncode == 2 and "COMMAND" in out.stdout
