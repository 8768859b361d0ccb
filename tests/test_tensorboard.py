"""TensorBoard tells the truth at its default settings (experiments/tensorboard_views.py), read back from what
TensorBoard's own server serves, and, where Chromium is installed (.ci/chromium), from the page a browser
renders: the accuracy per distance as the first cards of the default view (Time Series), the model, regime
and task as the first hyperparameters."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import compose_config, get_json, serving_tensorboard

from longrange.experiments.report.analysis import Cell
from longrange.experiments.report.tensorboard_views import REPORT_TAG, TABLE_TAG, write_tensorboard_summary
from longrange.experiments.run.callbacks import tensorboard_hparams
from longrange.experiments.run.config import plain

BROWSER_REQUIRED = os.environ.get("LONGRANGE_BROWSER") == "required"  # set by .ci/run: fail, not skip
HEADLINE = ["Model", "Regime", "Task"]


def job_record(model: str, distance: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The resolved config and the result record of a job, as train.py has them when it logs hparams."""
    overrides = [f"model={model}", f"data.distance={distance}", "trainer=debug"]
    config = plain(compose_config(overrides, Path("job")))  # paths are only values here
    record = {
        "choices": {"model": model, "data": "coref"},
        "parameters": 1000,
        "test_acc": 0.5,
        "val_acc": 0.6,
    }
    return config, record


def test_hparams_name_the_model_regime_and_task_first() -> None:
    config, record = job_record("gru", "[8,16]")
    hparams, metrics = tensorboard_hparams(config, record)
    assert list(hparams)[:3] == HEADLINE
    assert [hparams[k] for k in HEADLINE] == ["gru", "mixed", "coref"]
    assert hparams["model"] == config["model"] and hparams["parameters"] == 1000  # the whole config stays
    assert list(metrics) == ["hparams/test_acc", "hparams/val_acc"]
    assert all(key[0].islower() for key in hparams if key not in HEADLINE)  # so the headline sorts first


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A sweep folder as TensorBoard sees it: three jobs (hparams through Lightning's logger exactly as
    train.py logs them, images under lower-case tags like the jobs' own) and the report's summary run."""
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.tensorboard import SummaryWriter

    root = tmp_path_factory.mktemp("board")
    for model, distance in (("lstm", "8"), ("gru", "16"), ("attention", "[8,16]")):
        job = root / f"data.distance={distance},model={model},seed=0"
        logger = TensorBoardLogger(save_dir=str(job), name="tensorboard", version="", default_hp_metric=False)
        logger.log_hyperparams(*tensorboard_hparams(*job_record(model, distance)))
        logger.finalize("success")
        with SummaryWriter(str(job / "tensorboard")) as writer:
            writer.add_scalar("train/loss", 1.0, 1)
            writer.add_image("attention/d=8", np.full((3, 4, 4), 0.5), 1)
    cells = {d: Cell(accuracies=[0.9, 1.0]) for d in (8, 16)}
    table = {
        ("fixed", "gru"): cells,
        ("fixed", "lstm"): {8: Cell(accuracies=[1.0])},
        ("mixed", "attention"): cells,
    }
    write_tensorboard_summary({}, "# Sweep report: board\n", root / "summary", table, 0.9, "budget: 4 steps")
    return root


@contextmanager
def serving(logdir: Path) -> Iterator[str]:
    """TensorBoard's own server on ``logdir``, once it has loaded the summary run and the three jobs."""

    def loaded(address: str) -> bool:
        runs = get_json(f"{address}/data/runs")
        return "summary" in runs and len(runs) == 4

    with serving_tensorboard(logdir, loaded) as address:
        yield address


@pytest.fixture(scope="module")
def board(logdir: Path) -> Iterator[str]:
    with serving(logdir) as address:
        yield address


def get(address: str, path: str, body: dict | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{address}/data/plugin/{path}", data, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        raw = response.read()
    return raw if raw[:4] == b"\x89PNG" else json.loads(raw)


def test_the_summary_run_serves_the_tables_as_wide_images_and_the_report_as_text(board: str) -> None:
    """What the server gives the page (the order the page shows it in is the browser test's to check)."""
    tags = get(board, "timeseries/tags")
    tables = [f"{TABLE_TAG}, fixed", f"{TABLE_TAG}, mixed"]
    assert set(tables) <= set(tags["images"]["tagRunSampledInfo"])
    for tag in tables:  # each image fits a card (~2:1) rather than shrinking to its height
        [image] = get(board, f"images/images?run=summary&tag={urllib.parse.quote(tag)}")
        png = get(board, f"images/individualImage?{image['query']}")
        width, height = struct.unpack(">II", png[16:24])
        assert width / height > 1.8, (tag, width, height)
    assert "summary" not in tags["scalars"]["runTagInfo"]  # images only: no smoothing, no step axis
    [tag] = get(board, "text/tags")["summary"]  # torch's add_text appends /text_summary
    assert tag.startswith(REPORT_TAG)
    assert (
        "Sweep report: board" in get(board, f"text/text?run=summary&tag={urllib.parse.quote(tag)}")[0]["text"]
    )


def test_the_hparams_tab_shows_model_regime_and_task_first(board: str) -> None:
    experiment = get(board, "hparams/experiment", {"experimentName": ""})
    names = [info["name"] for info in experiment["hparamInfos"]]
    assert names[:3] == HEADLINE, names  # the server's order, which the page keeps (first five shown)
    assert experiment["metricInfos"][0]["name"]["tag"] == "hparams/test_acc"
    statuses = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]
    request = {"experimentName": "", "allowedStatuses": statuses, "startIndex": 0, "sliceSize": 10}
    groups = get(board, "hparams/session_groups", request)
    models = sorted(group["hparams"]["Model"] for group in groups["sessionGroups"])
    assert models == ["attention", "gru", "lstm"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def render(address: str, page: str, screenshot: Path | None = None) -> str:
    """The page as headless Chromium renders it after TensorBoard's scripts ran (its DOM as HTML);
    with ``screenshot``, also a 1600 x 1200 PNG of it."""
    browser = chromium()
    if browser is None:
        if BROWSER_REQUIRED:
            pytest.fail("chromium is not installed (LONGRANGE_BROWSER=required; .ci/chromium installs it)")
        pytest.skip("chromium is not installed (Debian: .ci/chromium, or apt-get install chromium)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
             "--virtual-time-budget=30000", "--window-size=1600,1200"]  # fmt: skip
    with tempfile.TemporaryDirectory() as profile:
        base = [browser, *flags, f"--user-data-dir={profile}"]
        if screenshot is not None:
            subprocess.run([*base, f"--screenshot={screenshot}", f"{address}/{page}"], capture_output=True,
                           timeout=180, check=True)  # fmt: skip
        done = subprocess.run([*base, "--dump-dom", f"{address}/{page}"], capture_output=True, text=True,
                              timeout=180, check=True)  # fmt: skip
    return done.stdout


def test_a_browser_sees_the_accuracy_tables_first(board: str, tmp_path: Path) -> None:
    """Chart lines may not draw without a GPU; the cards, their titles and images do."""
    import re

    html = render(board, "#timeseries", tmp_path / "timeseries.png")
    groups = re.findall(r'class="group-title" title="([^"]+)"', html)
    assert groups[:2] == ["Sweep", "attention"], groups
    titles = re.findall(r'class="tag-path"[^>]*title="([^"]+)"', html)
    assert titles[:2] == [f"{TABLE_TAG}, fixed", f"{TABLE_TAG}, mixed"], titles
    assert (tmp_path / "timeseries.png").stat().st_size > 20_000
