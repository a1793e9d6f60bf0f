import dataclasses

import pytest

from posetrack_app.config import CONFIG_DIR, AppConfig, from_dict, load_config, parse_override, replace, to_dict
from posetrack_app.errors import ConfigError


def test_defaults_round_trip_through_dict():
    cfg = AppConfig()
    assert from_dict(to_dict(cfg)) == cfg


def test_yaml_file_and_overrides_apply_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("detector:\n  input_size: 640\n  score_threshold: 0.5\n")
    cfg = load_config(str(path), ["detector.input_size=1280", "render.draw_boxes=false"])
    assert cfg.detector.input_size == 1280
    assert cfg.detector.score_threshold == 0.5
    assert cfg.render.draw_boxes is False


def test_round_trip_through_yaml_file(tmp_path):
    import yaml

    cfg = load_config(None, ["detector.input_size=1280", "pose.flip_test=false"])
    path = tmp_path / "dump.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(str(path)) == cfg


@pytest.mark.parametrize("text, expected", [
    ("a.b=1", {"a": {"b": 1}}),
    ("a.b=0.5", {"a": {"b": 0.5}}),
    ("a=true", {"a": True}),
    ("a.b.c=hello", {"a": {"b": {"c": "hello"}}}),
    ("a=[1, 2]", {"a": [1, 2]}),
    ("a=", {"a": ""}),
])
def test_parse_override(text, expected):
    assert parse_override(text) == expected


@pytest.mark.parametrize("overrides, message", [
    (["detector.bogus=1"], "unknown config key detector.bogus; valid keys here: model, input_size"),
    (["nosuchsection.x=1"], "unknown config key nosuchsection"),
    (["detector.input_size=big"], "detector.input_size must be in [32, 3840] or one of 'auto', got 'big'"),
    (["detector.input_size=1.5"], "detector.input_size expects int or str"),
    (["render.draw_boxes=3"], "render.draw_boxes expects bool"),
    (["detector=3"], "detector must be a mapping"),
    (["no_equals_sign"], "--set expects KEY=VALUE"),
])
def test_rejections_name_the_problem(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(".", r"\.")):
        load_config(None, overrides)


def test_int_is_accepted_for_float_fields():
    cfg = load_config(None, ["detector.score_threshold=1"])
    assert cfg.detector.score_threshold == 1.0 and isinstance(cfg.detector.score_threshold, float)


def test_malformed_yaml_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("detector:\n  input_size: [640\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(str(path))


def test_missing_config_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/no/such/config.yaml")


def test_config_is_frozen_and_replace_makes_a_copy():
    cfg = AppConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.detector.input_size = 1
    changed = replace(cfg, **{"detector.input_size": 1280})
    assert changed.detector.input_size == 1280 and cfg.detector.input_size != 1280


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
def test_every_preset_loads(preset):
    load_config(str(CONFIG_DIR / preset))


def _numeric_fields(cls, prefix=""):
    """(dotted key, dataclass field) for every int/float field of the config tree."""
    import typing

    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            yield from _numeric_fields(hints[f.name], key + ".")
        elif hints[f.name] in (int, float):
            yield key, f


NUMERIC_FIELDS = list(_numeric_fields(AppConfig))


def test_every_numeric_field_declares_its_range():
    assert len(NUMERIC_FIELDS) > 20
    missing = [key for key, f in NUMERIC_FIELDS if "range" not in f.metadata]
    assert not missing, f"config fields without a declared range: {missing}"


def _outside_values(valid, is_int):
    """Values just outside each bounded end of the range."""
    step = 1 if is_int else 1e-3
    values = []
    if valid.lo is not None:
        values.append(valid.lo if valid.lo_open else valid.lo - step)
    if valid.hi is not None:
        values.append(valid.hi if valid.hi_open else valid.hi + step)
    return values


OUT_OF_RANGE = [(key, value) for key, f in NUMERIC_FIELDS if "range" in f.metadata
                for value in _outside_values(f.metadata["range"], f.type in (int, "int"))]


@pytest.mark.parametrize("key, value", OUT_OF_RANGE)
def test_out_of_range_values_exit_2_naming_the_range(key, value, capsys):
    from posetrack_app.cli import main

    valid = dict(NUMERIC_FIELDS)[key].metadata["range"]
    assert main(["track", "no_such_video.mp4", "--set", f"{key}={value}"]) == 2
    err = capsys.readouterr().err
    assert f"config key {key} must be in {valid}" in err and "Traceback" not in err


@pytest.mark.parametrize("key, value", [(key, f.default) for key, f in NUMERIC_FIELDS])
def test_defaults_lie_inside_their_ranges(key, value):
    load_config(None, [f"{key}={value}"])


@pytest.mark.parametrize("text, message", [("nan", "must be in"), ("inf", "must be in"), ("-Infinity", "must be in"),
                                           (".nan", "must be in"), (".inf", "must be in"), ("-.inf", "must be in"),
                                           ("abc", "expects float")])
def test_nan_and_inf_are_rejected(text, message):
    with pytest.raises(ConfigError, match=f"detector.score_threshold {message}"):
        load_config(None, [f"detector.score_threshold={text}"])
