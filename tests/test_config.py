from dataclasses import dataclass, field

import pytest

from text4d.config import ConfigError, editable_fields, load_config, set_value, to_yaml


@dataclass
class Inner:
    steps: int = 3


@dataclass
class Schema:
    lr: float = field(default=1e-3, metadata={"min": 0.0})
    mode: str = field(default="a", metadata={"choices": ["a", "b"]})
    flag: bool = True
    inner: Inner = field(default_factory=Inner)


def test_yaml_then_dotlist_override_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.5\ninner:\n  steps: 7\n")
    cfg = load_config(Schema, path, ["inner.steps=9"])
    assert cfg.lr == 0.5 and cfg.inner.steps == 9 and isinstance(cfg, Schema)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["lrr=1"], "lrr"),
        (["lr=abc"], "lr"),
        (["lr=-1"], "lr' must be >= 0"),
        (["mode=c"], "one of"),
        (["inner.nope=1"], "inner.nope"),
        (["lr"], "key=value"),
    ],
)
def test_bad_overrides_name_the_key(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Schema, None, overrides)


def test_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Schema, tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(Schema, bad)


def test_set_value_converts_and_refuses_without_changing():
    cfg = Schema()
    assert set_value(cfg, "lr", "0.25") == 0.25
    assert set_value(cfg, "flag", "off") is False
    assert set_value(cfg, "inner.steps", 4.0) == 4
    for key, value in [("lr", "nan"), ("lr", -2), ("inner.steps", 1.5), ("nope", 1), ("flag", "maybe")]:
        with pytest.raises(ConfigError):
            set_value(cfg, key, value)
    assert (cfg.lr, cfg.flag, cfg.inner.steps) == (0.25, False, 4)


def test_yaml_round_trip_and_editable_fields(tmp_path):
    cfg = Schema(lr=0.125)
    path = tmp_path / "out.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(Schema, path) == cfg
    assert [k for k, _, _ in editable_fields(cfg)] == ["lr", "mode", "flag", "inner.steps"]


@pytest.mark.parametrize(
    ("yaml", "overrides", "source"),
    [
        ("lr: 0.5\n", ["lr=abc"], "(command line override lr=abc)"),  # a type error from the command line
        ("lr: 0.5\n", ["lr=-1"], "(command line override lr=-1)"),  # a bound broken on the command line
        ("lr: 0.5\n", ["inner.steps=x"], "(command line override inner.steps=x)"),
        ("lr: abc\n", ["inner.steps=4"], "(in {path})"),  # the YAML's value is the bad one
        ("lr: -1\n", ["inner.steps=4"], "(in {path})"),
        ("mode: c\n", [], "(in {path})"),
    ],
)
def test_errors_name_where_the_bad_value_came_from(tmp_path, yaml, overrides, source):
    path = tmp_path / "c.yaml"
    path.write_text(yaml)
    with pytest.raises(ConfigError) as info:
        load_config(Schema, path, overrides)
    message = str(info.value)
    assert message.endswith(source.format(path=path)), message
    if "command line" in source:
        assert str(path) not in message  # the file was fine: it must not be blamed
