"""Every config composes and validates; every _target_ imports; bad input fails early, naming the key."""

from __future__ import annotations

import pytest
from helpers import CONF
from hydra.utils import get_method
from omegaconf import OmegaConf

from longrange.experiments.run.config import ConfigError, validate

GROUP_FILES = [
    (group, p.stem) for group in ("data", "model", "trainer", "logger", "callbacks", "experiment")
    for p in sorted((CONF / group).glob("*.yaml"))
]  # fmt: skip


def targets(node, path=""):
    if isinstance(node, dict):
        if "_target_" in node:
            yield path, node["_target_"]
        for key, value in node.items():
            yield from targets(value, f"{path}.{key}" if path else key)


@pytest.mark.parametrize(("group", "name"), GROUP_FILES, ids=[f"{g}={n}" for g, n in GROUP_FILES])
def test_every_config_file_composes_validates_and_its_targets_import(compose, group: str, name: str) -> None:
    cfg = compose([f"{group}={name}"])
    raw = OmegaConf.to_container(cfg, resolve=False)
    found = list(targets(raw))
    if raw.get("model") is None:  # a preset whose sweep grid supplies the model (validated per grid point)
        with pytest.raises(ConfigError, match="model: needs a _target_"):
            validate(cfg)
        return
    validate(cfg)
    assert {"data", "model", "trainer", "logger"} <= {path for path, _ in found}
    for _, target in found:
        assert callable(get_method(target))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["++misspelled=5"], "misspelled: unknown top-level key; allowed keys: name, seed"),
        (["++model.widht=5"], "model.widht: unknown key for LSTM; allowed keys: d_input, dropout"),
        (["++data.distanse=5"], "data.distanse: unknown key for CorefRecall; allowed keys: distance"),
        (["++train.lrr=0.1"], "train.lrr: unknown key for TrainConfig; allowed keys: batch_size"),
        (["model.width=abc"], "model.width='abc' has the wrong type; allowed: <class 'int'>"),
        (["data.distance=[4,x]"], r"data.distance=\[4, 'x'\] has the wrong type"),
        (["seed=-1"], "seed=-1; allowed: an integer >= 0"),
        (["threads=0"], "threads=0; allowed: an integer >= 1"),
        (["data.distance=-4"], r"data.distance=-4 is out of range; allowed: an integer in \[0, inf\]"),
        (["data.load=9"], r"data.load=9 is out of range; allowed: an integer in \[0, 7\]"),
        (["trainer.max_steps=0"], "trainer.max_steps=0 is out of range; allowed: an integer >= 1"),
        (["train.lr=0"], "train.lr=0 is out of range; allowed: > 0"),
        (["train.budget=forever"], "train.budget='forever' has the wrong type; allowed: typing.Literal"),
        (
            ["model=attention", "model.positional=rope"],
            "model.positional='rope'; allowed: sinusoidal, learned",
        ),
        (["model=attention", "model.num_heads=5"], "model.num_heads=5 must divide model.width=64"),
        (["model=attention", "model.max_len=64", "data.distance=100"], "longer than model.max_len=64"),
        (["data.num_nouns=???"], "data.num_nouns: no value given"),
        (["++model._target_=no.such.Model"], "model._target_='no.such.Model' cannot be imported"),
        (["++callbacks.diagnostics.sample=3"], "callbacks.diagnostics.sample: unknown key for Diagnostics"),
        (["++callbacks.extra={a: 1}"], "callbacks.extra: needs a _target_ .or null to drop it."),
        (["++callbacks.extra._target_=no.Such"], "callbacks.extra._target_='no.Such' cannot be imported"),
    ],
)
def test_bad_config_fails_naming_the_key(compose, overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(compose(overrides))


def test_defaults_are_the_documented_ones_and_every_target_is_a_config_node(compose) -> None:
    cfg = compose([])
    assert cfg.data.distance == 32 and cfg.seed == 0 and cfg.threads == 1
    assert cfg.model._target_.endswith(".LSTM") and cfg.data._target_.endswith(".CorefRecall")
    found = [path for path, _ in targets(OmegaConf.to_container(cfg, resolve=False))]
    callbacks = [f"callbacks.{name}" for name in cfg.callbacks]  # conf/callbacks/default.yaml, in order
    assert found == ["data", "model", "trainer", "logger", *callbacks]  # no _target_ hidden anywhere else
    assert callbacks[0] == "callbacks.checkpoint" and "callbacks.diagnostics" in callbacks


def test_a_callback_set_to_null_is_left_out(make_config, tmp_path) -> None:
    """``callbacks.diagnostics=null`` drops one callback from the run (the group is the one list)."""
    from helpers import train_job

    result = train_job(tmp_path, "trainer=debug", "train.eval_samples=8", "callbacks.diagnostics=null")
    assert result["status"] == "ok" and not (tmp_path / "diagnostics.json").exists()
