"""Config: presets parse and validate, --set overrides, and bad input is refused naming the key."""

from __future__ import annotations

import pytest

from flatpriv.config import Config, config_from_dict, config_to_dict
from flatpriv.config_io import describe_presets, preset_names, resolve
from flatpriv.errors import FlatprivError
from flatpriv.step import ALGORITHMS


def test_every_preset_resolves_and_names_a_known_algorithm():
    names = preset_names()
    assert "default" in names
    for name in names:
        cfg, run_name = resolve(preset=name)
        assert run_name == name
        assert cfg.algorithm in ALGORITHMS
    assert all(desc for _, desc in describe_presets()), "every preset needs a one-line description"


def test_default_is_mnist1d_mlp_sgd():
    cfg, name = resolve()
    assert (name, cfg.data.name, cfg.model.name, cfg.algorithm) == ("default", "mnist1d", "mlp", "sgd")


def test_overrides_are_typed():
    cfg, _ = resolve(
        overrides=[
            "optim.lr=0.2",
            "sharpness.rho=0",
            "algorithm=sam",
            "data.root=123",
            "optim.betas=[0.8, 0.9]",
            "train.save_model=false",
        ]
    )
    assert cfg.optim.lr == 0.2 and isinstance(cfg.sharpness.rho, float)
    assert cfg.algorithm == "sam" and cfg.data.root == "123"
    assert cfg.optim.betas == (0.8, 0.9) and cfg.train.save_model is False


def test_round_trip_through_dict():
    cfg, _ = resolve(preset="default", overrides=["optim.betas=[0.5, 0.6]"])
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_dict({}) == Config()


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.lrr=0.1", "optim.lrr"),
        ("nosection.x=1", "nosection"),
        ("optim.lr=fast", "optim.lr"),
        ("train.epochs=2.5", "train.epochs"),
        ("train.epochs=true", "train.epochs"),
        ("optim.lr=0", "optim.lr"),
        ("optim.lr=-1", "optim.lr"),
        ("sharpness.rho=-0.1", "sharpness.rho"),
        ("sharpness.theta=0", "sharpness.theta"),
        ("sharpness.theta=1.5", "sharpness.theta"),
        ("train.epochs=0", "train.epochs"),
        ("data.label_noise=1.0", "data.label_noise"),
        ("optim.schedule=linear", "optim.schedule"),
        ("optim=3", "optim"),
        ("noequals", "key=value"),
    ],
)
def test_bad_values_are_refused_naming_the_key(override, fragment):
    with pytest.raises(FlatprivError) as e:
        resolve(overrides=[override])
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_preset_and_both_sources():
    with pytest.raises(FlatprivError, match="no preset named 'nope'"):
        resolve(preset="nope")
    with pytest.raises(FlatprivError, match="either"):
        resolve(preset="default", config_file="x.toml")


def test_config_file(tmp_path):
    f = tmp_path / "mine.toml"
    f.write_text('algorithm = "vasso"\n[sharpness]\ntheta = 0.5\n')
    cfg, name = resolve(config_file=str(f))
    assert (name, cfg.algorithm, cfg.sharpness.theta) == ("mine", "vasso", 0.5)
    f.write_text("algorithm = \n")
    with pytest.raises(FlatprivError, match="not valid TOML"):
        resolve(config_file=str(f))
    with pytest.raises(FlatprivError, match="cannot read"):
        resolve(config_file=str(tmp_path / "absent.toml"))
