"""From config to objects, strictly: the one place that instantiates ``_target_`` nodes, and the checks
that reject a bad config before anything trains.

Hydra accepts ``++misspelled=5`` silently and has no range checks, so every run (and every point of a
sweep grid, before the first job starts) goes through :func:`validate`:

* the root may hold only the keys of :data:`ROOT_KEYS`;
* ``train`` must match :class:`TrainConfig`; every ``_target_`` node (data, model, trainer, logger) may
  hold only its target's constructor arguments, with values of the annotated types;
* the task and the model are constructed (cheap: no data, ~100k parameters), so their own range checks
  run, and the longest sequence must fit the model's ``max_len``;
* ``resources`` must match :class:`ResourcesConfig`; the launch's check
  (``sweep.validate.ValidateConfig``) also compares each job's estimated peak memory with its limit
  (``resources.check``) before anything trains.

Each failure is one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from hydra.utils import get_method
from hydra.utils import instantiate as hydra_instantiate
from omegaconf import DictConfig, OmegaConf

from longrange.models.module import build_backbone

ROOT_KEYS = (
    "name",
    "seed",
    "threads",
    "data",
    "model",
    "train",
    "trainer",
    "logger",
    "callbacks",
    "resources",
)
TARGET_NODES = ("data", "model", "trainer", "logger")  # one ``_target_`` each; ``callbacks`` holds several


class ConfigError(ValueError):
    """A config value that cannot run; the message names the key and the allowed values."""


@dataclass
class TrainConfig:
    """The root ``train`` node: optimisation and budget (the number of steps is ``trainer.max_steps``).

    AdamW with linear warmup then cosine decay to ``min_lr_ratio * lr``; the same schedule for every model.
    ``budget``: "fixed_steps" trains exactly ``trainer.max_steps``; "to_threshold" stops early once
    validation accuracy reaches ``threshold``. Either way the step that first reached it is recorded.
    The values, with their reasons, are written once: in conf/config.yaml (no defaults here).
    """

    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    min_lr_ratio: float
    threshold: float
    budget: Literal["fixed_steps", "to_threshold"]
    eval_samples: int

    def __post_init__(self) -> None:
        for key, low in (("batch_size", 1), ("warmup_steps", 0), ("eval_samples", 1)):
            if getattr(self, key) < low:
                raise ConfigError(f"train.{key}={getattr(self, key)} is out of range; allowed: >= {low}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr={self.lr} is out of range; allowed: > 0")
        for key in ("threshold", "min_lr_ratio", "weight_decay"):
            if not 0 <= getattr(self, key) <= 1:
                raise ConfigError(f"train.{key}={getattr(self, key)} is out of range; allowed: [0, 1]")

    def optimisation(self) -> dict[str, Any]:
        """The keys the LightningModule takes (``models.module.LongRangeModule``)."""
        keys = ("lr", "weight_decay", "warmup_steps", "min_lr_ratio", "threshold")
        return {key: getattr(self, key) for key in keys}


@dataclass
class ResourcesConfig:
    """The root ``resources`` node: memory limits checked before training, and the evaluation budget.

    ``max_memory_gb``: the memory one job may use (GB); ``null``: what this machine has available,
    shared by the jobs that run at once. ``eval_tokens``: evaluation batches (and the diagnostics'
    chunks) hold at most this many tokens (batch x length), at least one sample: a longer evaluation
    distance takes longer, not more memory. Neither changes what a job computes, so neither is part of
    the config hash or of a sweep's folder names.
    """

    max_memory_gb: float | None  # the values, with their reasons, are written once: in conf/config.yaml
    eval_tokens: int

    def __post_init__(self) -> None:
        if self.max_memory_gb is not None and not self.max_memory_gb > 0:
            raise ConfigError(
                f"resources.max_memory_gb={self.max_memory_gb} is out of range; allowed: > 0 or null"
            )
        if self.eval_tokens < 1:
            raise ConfigError(f"resources.eval_tokens={self.eval_tokens} is out of range; allowed: >= 1")


def instantiate(node: DictConfig | dict, **kwargs: Any) -> Any:
    """Build the object a ``_target_`` node describes: the task, the trainer, the logger. (The model's node
    is built by ``models.module.build_backbone``, inside the LightningModule, which also checks the
    backbone contract; models never import this package.)"""
    return hydra_instantiate(node, _convert_="all", **kwargs)  # plain lists and dicts, never DictConfigs


def plain(cfg: DictConfig) -> dict:
    """The resolved config as plain containers (for hparams, hashing and result.json)."""
    # a DictConfig always converts to a dict (to_container's declared union also covers ListConfigs)
    return cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))


def _type_ok(value: Any, annotation: Any) -> bool:
    if annotation is inspect.Parameter.empty or annotation is Any:
        return True
    if isinstance(value, str) and "${" in value:
        return True  # an interpolation, checked once resolved
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in args)
    if origin is Literal:
        return value in args
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        return isinstance(value, list | tuple) and all(_type_ok(v, args[0]) for v in value if args)
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    return True  # classes and other annotations: left to the constructor


def check_arguments(path: str, values: dict, target: Any) -> None:
    """Unknown keys and wrong types against ``target``'s constructor signature."""
    init = target.__init__ if inspect.isclass(target) else target
    params = {n: p for n, p in inspect.signature(init).parameters.items() if n != "self"}
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(values) - set(params) - {"_target_"})
        if unknown:
            raise ConfigError(
                f"{path}.{unknown[0]}: unknown key for {getattr(target, '__qualname__', target)}; "
                f"allowed keys: {', '.join(sorted(params))}"
            )
    try:
        hints = typing.get_type_hints(init)
    except Exception:  # unresolvable forward references: leave types to the constructor
        hints = {}
    for key, value in values.items():
        if key in hints and not _type_ok(value, hints[key]):
            raise ConfigError(f"{path}.{key}={value!r} has the wrong type; allowed: {hints[key]}")


def validate(cfg: DictConfig) -> tuple[Any, Any]:
    """Check a composed config (without its ``hydra`` node); returns the constructed task and the backbone
    built on torch's meta device (shapes only: no memory, no random numbers drawn; the trained one is
    built once, after seeding, by the LightningModule). Each config is checked once per process: a
    single run's Hydra callback checks it before any folder exists, and ``train`` reuses that."""
    raw = cast("dict[str, Any]", OmegaConf.to_container(cfg, resolve=False))  # a DictConfig: a dict
    key = json.dumps(raw, sort_keys=True, default=str)
    if key not in _CHECKED:
        _CHECKED.clear()  # one entry: the config of this job
        _CHECKED[key] = _validate(cfg, raw)
    return _CHECKED[key]


_CHECKED: dict[str, tuple[Any, Any]] = {}


def _validate(cfg: DictConfig, raw: dict[str, Any]) -> tuple[Any, Any]:
    missing = _missing_keys(raw)
    if missing:
        raise ConfigError(f"{missing[0]}: no value given (???); set it on the command line or in a preset")
    unknown = sorted(set(raw) - set(ROOT_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown top-level key; allowed keys: {', '.join(ROOT_KEYS)}")
    for key in ("seed", "threads"):
        if not _type_ok(raw[key], int) or raw[key] < (1 if key == "threads" else 0):
            raise ConfigError(f"{key}={raw[key]!r}; allowed: an integer >= {1 if key == 'threads' else 0}")
    check_arguments("train", raw["train"], TrainConfig)
    TrainConfig(**plain(cfg.train))
    if raw.get("resources") is not None:
        if not isinstance(raw["resources"], dict):
            raise ConfigError(
                f"resources={raw['resources']!r}; allowed: a node with max_memory_gb, eval_tokens"
            )
        check_arguments("resources", raw["resources"], ResourcesConfig)
        ResourcesConfig(**plain(cfg.resources))
    for node in TARGET_NODES:
        if not isinstance(raw.get(node), dict) or "_target_" not in raw[node]:
            raise ConfigError(f"{node}: needs a _target_; choose one of the files in conf/{node}/")
        try:
            target = get_method(raw[node]["_target_"])
        except Exception as error:
            raise ConfigError(
                f"{node}._target_={raw[node]['_target_']!r} cannot be imported: {error}"
            ) from None
        check_arguments(node, raw[node], target)
    for name, node in (raw.get("callbacks") or {}).items():  # a node each; null drops one
        if node is None:
            continue
        if not isinstance(node, dict) or "_target_" not in node:
            raise ConfigError(f"callbacks.{name}: needs a _target_ (or null to drop it); see conf/callbacks/")
        try:
            check_arguments(f"callbacks.{name}", node, get_method(node["_target_"]))
        except ConfigError:
            raise
        except Exception as error:
            raise ConfigError(
                f"callbacks.{name}._target_={node['_target_']!r} cannot be imported: {error}"
            ) from None
    steps = raw["trainer"].get("max_steps")
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"trainer.max_steps={steps!r} is out of range; allowed: an integer >= 1")
    try:
        task = instantiate(cfg.data)
        with torch.device("meta"):
            backbone = build_backbone(plain(cfg.model))
    except Exception as error:  # hydra wraps the constructor's own error: report that one
        raise ConfigError(str(error.__cause__ or error)) from None
    for distance in task.eval_distances:  # one sample per split: a too small sample space fails here
        for split in ("val", "test"):
            try:
                task.generate(split, 1, distance, seed=raw["seed"])
            except ValueError as error:
                raise ConfigError(str(error)) from None
    if backbone.max_len is not None and task.max_seq_len > backbone.max_len:
        longest = max(task.train_distances + task.eval_distances)
        raise ConfigError(
            f"data.distance={longest} makes sequences of {task.max_seq_len} tokens, longer than "
            f"model.max_len={backbone.max_len}; allowed: distances with sequences <= model.max_len"
        )
    return task, backbone


def _missing_keys(node: Any, path: str = "") -> list[str]:
    if isinstance(node, dict):
        return [m for k, v in node.items() for m in _missing_keys(v, f"{path}{k}.")]
    if isinstance(node, list):
        return [m for i, v in enumerate(node) for m in _missing_keys(v, f"{path}{i}.")]
    return [path.rstrip(".")] if node == "???" else []
