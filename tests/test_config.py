from dataclasses import dataclass

import pytest

from mass.config import describe, load_config, nested, setting
from mass.errors import MassError


@dataclass
class Inner:
    temperature: float = setting(0.0, "temperature")
    stop: list[str] = setting([], "stops")


def _hot():
    return Inner(temperature=1.0, stop=["x"])


@dataclass
class Outer:
    name: str = setting("base", "a name")
    limit: int | None = setting(None, "a limit")
    steps: int = setting(10, "steps")
    flag: bool = setting(False, "a flag")
    inner: Inner = nested(Inner, "inner group")
    hot: Inner = nested(_hot, "a group whose defaults differ from Inner()")


def test_defaults_then_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 20\ninner:\n  temperature: 0.5\n")
    cfg = load_config(Outer, f, ["inner.temperature=0.7", "limit=3"])
    assert cfg.steps == 20  # from YAML
    assert cfg.inner.temperature == 0.7  # the command line wins over YAML
    assert cfg.limit == 3 and cfg.name == "base" and cfg.inner.stop == []


def test_values_are_typed():
    cfg = load_config(Outer, None, ["inner.temperature=1", "flag=true", "inner.stop=[a, b]", "name=123", "limit=null"])
    assert cfg.inner.temperature == 1.0 and isinstance(cfg.inner.temperature, float)
    assert cfg.flag is True and cfg.inner.stop == ["a", "b"] and cfg.name == "123" and cfg.limit is None


def test_list_defaults_are_not_shared():
    a, b = Outer(), Outer()
    a.inner.stop.append("x")
    assert b.inner.stop == []


@pytest.mark.parametrize("override, message", [
    ("stpes=3", "unknown config key 'stpes' (did you mean 'steps'?)"),
    ("inner.temprature=0.1", "unknown config key 'inner.temprature' (did you mean 'inner.temperature'?)"),
    ("steps=abc", "config key 'steps' expects int, got 'abc'"),
    ("steps=1.5", "config key 'steps' expects int"),
    ("flag=3", "config key 'flag' expects bool"),
    ("inner=3", "config key 'inner' is a group of settings"),
    ("steps", "must look like key=value"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(MassError) as e:
        load_config(Outer, None, [override])
    assert message in str(e.value)


def test_yaml_errors(tmp_path):
    with pytest.raises(MassError, match="config file not found"):
        load_config(Outer, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(MassError, match="must hold a mapping"):
        load_config(Outer, bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("inner:\n  temp: 1\n")
    with pytest.raises(MassError, match="unknown config key 'inner.temp'"):
        load_config(Outer, typo)


def test_describe_lists_nested_keys_with_help():
    rows = {key: (type_name, default, help_text) for key, type_name, default, help_text in describe(Outer)}
    assert rows["inner.temperature"] == ("float", "0.0", "temperature")
    assert rows["limit"][0] == "int | null"


def test_overrides_keep_a_groups_own_defaults():
    cfg = load_config(Outer, None, ["hot.stop=[y]"])
    assert cfg.hot.temperature == 1.0 and cfg.hot.stop == ["y"]  # not reset to Inner()'s 0.0


def test_scientific_notation_floats():
    assert load_config(Outer, None, ["inner.temperature=1e-4"]).inner.temperature == 1e-4


# --- property tests (Hypothesis): overrides either set the typed value or fail with MassError ---

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.integers(-10**9, 10**9), st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_typed_overrides_round_trip(steps, temperature):
    cfg = load_config(Outer, None, [f"steps={steps}", f"inner.temperature={temperature!r}"])
    assert cfg.steps == steps and cfg.inner.temperature == pytest.approx(temperature)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40))
def test_any_override_text_sets_a_value_or_is_a_clear_error(text):
    try:
        cfg = load_config(Outer, None, [text])
    except MassError as e:
        assert str(e)  # one message, never another exception type
    else:
        assert isinstance(cfg, Outer) and isinstance(cfg.steps, int) and isinstance(cfg.flag, bool)
