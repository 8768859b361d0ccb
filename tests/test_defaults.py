"""One source for every default: each file of conf/model/ and conf/data/ against its ``_target_``'s
constructor (a new YAML is tested without editing this file).

* A *base* file (no ``defaults`` list) names every constructor argument, and each value, once Hydra has
  composed the file (interpolations resolved), is the constructor's default: ``LSTM()`` or
  ``CorefRecall()`` built in Python is the configured experiment. Every constructor argument has a default.
* A *variant* file (``defaults: [base, _self_]``, e.g. deltanet_negeig.yaml, selective_copying.yaml) is its
  base plus the keys it names: composed, it differs from its base in exactly those keys, each one changed
  (a key restating the base's value would be a default written twice), and in nothing else.
"""

from __future__ import annotations

import inspect
from typing import Any

import pytest
import torch
from helpers import CONF, compose_config
from hydra.utils import get_class
from omegaconf import OmegaConf
from taskcheck import task_from_config

from longrange.datasets.coref import CorefRecall
from longrange.models.lstm import LSTM
from longrange.models.module import build_backbone

GROUPS = ("model", "data")
FILES = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def written(group: str, name: str) -> dict[str, Any]:
    """The file as written: its own keys, interpolations unresolved, ``defaults`` included."""
    node = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{name}.yaml"), resolve=False)
    assert isinstance(node, dict)
    return node


def base_of(group: str, name: str) -> str | None:
    """The file a variant builds on (its defaults list: one file of the same group, then ``_self_``)."""
    defaults = written(group, name).get("defaults")
    if defaults is None:
        return None
    bases = [entry for entry in defaults if entry != "_self_"]
    assert len(bases) == 1 and isinstance(bases[0], str), f"{group}/{name}: one base file, then _self_"
    assert (CONF / group / f"{bases[0]}.yaml").exists(), f"{group}/{name}: its base {bases[0]} is not a file"
    return bases[0]


def composed(group: str, name: str) -> dict[str, Any]:
    """The group's node as a run gets it: defaults list applied, interpolations resolved."""
    node = OmegaConf.to_container(compose_config([f"{group}={name}"])[group], resolve=True)
    assert isinstance(node, dict)
    return node


def arguments(target: str) -> dict[str, inspect.Parameter]:
    """The constructor's arguments (``self`` left out)."""
    signature = inspect.signature(get_class(target).__init__)
    return {name: p for name, p in signature.parameters.items() if name != "self"}


def same(a: object, b: object) -> bool:
    """Equal values, a list equal to a tuple; a bool equals only a bool (True == 1 in Python)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


BASES = [pytest.param(g, n, id=f"{g}/{n}") for g, n in FILES if base_of(g, n) is None]
VARIANTS = [pytest.param(g, n, id=f"{g}/{n}") for g, n in FILES if base_of(g, n) is not None]


@pytest.mark.parametrize(("group", "name"), [pytest.param(g, n, id=f"{g}/{n}") for g, n in FILES])
def test_every_constructor_argument_has_a_default(group: str, name: str) -> None:
    config = composed(group, name)
    params = arguments(config["_target_"])
    assert not set(config) - {"_target_"} - set(params), "the file names keys the constructor does not take"
    without = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
    assert not without, f"{config['_target_']}: no default for {without}"


@pytest.mark.parametrize(("group", "name"), BASES)
def test_a_base_file_names_every_argument_with_its_constructor_default(group: str, name: str) -> None:
    config = composed(group, name)
    params = arguments(config.pop("_target_"))
    assert set(config) == set(params), f"conf/{group}/{name}.yaml must name every constructor argument"
    differ = {key: (value, params[key].default) for key, value in config.items()}
    differ = {key: pair for key, pair in differ.items() if not same(*pair)}
    assert not differ, f"conf/{group}/{name}.yaml (yaml, constructor) disagree: {differ}"


@pytest.mark.parametrize(("group", "name"), VARIANTS)
def test_a_variant_changes_exactly_the_keys_it_names(group: str, name: str) -> None:
    base = base_of(group, name)
    assert base is not None
    named = set(written(group, name)) - {"defaults"}
    assert named, f"conf/{group}/{name}.yaml names no key: it is its base"
    variant, parent = composed(group, name), composed(group, base)
    changed = {key for key in variant.keys() | parent.keys() if not same(variant.get(key), parent.get(key))}
    assert changed == named, f"conf/{group}/{name}.yaml changes {sorted(changed)} but names {sorted(named)}"


def test_variants_are_recognised() -> None:
    """The split above sees the shipped variants (a variant mistaken for a base would fail loudly anyway)."""
    names = {f"{g}/{n}" for g, n in FILES if base_of(g, n) is not None}
    assert {"data/selective_copying", "model/deltanet_negeig", "model/mamba_negeig"} <= names


def test_lstm_built_in_python_is_the_configured_model() -> None:
    """``LSTM()`` is conf/model/lstm.yaml's model, forget-gate bias 5 (chosen on validation) included."""
    configured = composed("model", "lstm")
    torch.manual_seed(0)
    built = LSTM()
    torch.manual_seed(0)
    expected = build_backbone(configured)
    assert isinstance(expected, LSTM)
    assert built.state_dict().keys() == expected.state_dict().keys()
    for key, value in expected.state_dict().items():
        assert torch.equal(built.state_dict()[key], value), key
    width = configured["width"]
    assert configured["forget_bias"] == 5.0
    assert (built.rnn.bias_ih_l0[width : 2 * width] == 5.0).all()


def test_coref_built_in_python_is_the_configured_task() -> None:
    """``CorefRecall()`` is conf/data/coref.yaml's task (load 1: one distractor noun), sample for sample."""
    built, configured = CorefRecall(), task_from_config("coref")
    assert built.load == configured.load == 1
    for attribute in ("num_nouns", "max_offset", "train_distances", "eval_distances"):
        assert getattr(built, attribute) == getattr(configured, attribute), attribute
    assert built.vocab.words == configured.vocab.words
    (distance,) = built.train_distances
    for split in ("train", "val"):
        a, b = built.generate(split, 32, distance, seed=0), configured.generate(split, 32, distance, seed=0)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
