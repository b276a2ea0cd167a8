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


@dataclasses.dataclass
class Pair:
    a: int = 1
    b: int = 2


@dataclasses.dataclass
class Specialised:
    """A section whose declared default differs from its class's defaults."""
    pair: Pair = dataclasses.field(default_factory=lambda: Pair(b=20))
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_a_partial_nested_section_keeps_the_parents_declared_default():
    assert parse_settings(Specialised, '{"pair": {"a": 5}}').pair == Pair(a=5, b=20)
    assert parse_settings(Specialised, '{"inner": {"k": 1}}').pair == Pair(b=20)
    assert parse_settings(Specialised, '{"pair": {"b": 3}}').pair == Pair(a=1, b=3)


def test_the_gaussians_mask_schedule_keeps_its_stride_under_a_partial_train_section():
    from maskfield.backends.gaussians.feature_field import GaussianMaskSettings
    from maskfield.distill.settings import MaskSettings

    assert parse_settings(GaussianMaskSettings, '{"train": {"iterations": 20}}').train.stride == 2
    assert parse_settings(GaussianMaskSettings, '{"train": {"stride": 1}}').train.stride == 1
    assert parse_settings(MaskSettings, '{"train": {"iterations": 20}}').train.stride == 1


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
