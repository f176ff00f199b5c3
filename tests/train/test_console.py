"""What a training run prints: in a file, one summary line per epoch and no bars, carriage
returns or colour codes; on a terminal, one live bar per epoch, drawn for rank 0 only.

Through a real run on the session's Ray (2 workers, the demo config on a tiny dataset): the
workers' lines reach this process as Ray forwards them, prefixes and all.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from distrec.config import load_config
from distrec.console import TERMINAL_ENV, console_for_workers
from distrec.console import progress_bar as progress
from distrec.train.config import TrainConfig
from distrec.train.run import train as fit
from tests.helpers import tiny_synthetic

EPOCHS = 3
DEMO = Path(__file__).resolve().parents[2] / "configs" / "mf" / "demo.yaml"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("data") / "tiny")
    tiny_synthetic(out, ratings=8_000)
    return out


@pytest.fixture
def console(monkeypatch):
    """Bars not switched off by DISTREC_QUIET (forwarded to the workers as "0"); Ray's prefix
    colours as the run leaves them, restored afterwards."""
    monkeypatch.setenv("DISTREC_QUIET", "0")
    monkeypatch.delenv(TERMINAL_ENV, raising=False)
    saved = os.environ.pop("RAY_COLOR_PREFIX", None)
    yield monkeypatch
    os.environ.pop("RAY_COLOR_PREFIX", None)
    if saved is not None:
        os.environ["RAY_COLOR_PREFIX"] = saved


def _run(dataset: str, tmp_path, capfd) -> str:
    """Train EPOCHS epochs; everything printed (this process's and the forwarded worker lines)."""
    cfg = load_config(
        TrainConfig,
        DEMO,
        [f"data.path={dataset}", f"output_dir={tmp_path / 'out'}", f"ray.storage_path={tmp_path / 'ray'}",
         f"train.epochs={EPOCHS}", "train.early_stopping_metric=null", "train.batch_size=256", "model.dim=8",
         "train.export_embeddings=false"],
    )  # fmt: skip
    fit(cfg)
    printed, deadline = "", time.monotonic() + 60
    while f"epoch {EPOCHS}/{EPOCHS} " not in printed and time.monotonic() < deadline:  # Ray forwards lines a little later
        time.sleep(0.5)
        out, err = capfd.readouterr()
        printed += out + err
    time.sleep(1.0)
    out, err = capfd.readouterr()
    return printed + out + err


@pytest.mark.slow
def test_in_a_file_one_summary_line_per_epoch_and_no_bars(local_ray, dataset, tmp_path, capfd, console):
    printed = _run(dataset, tmp_path, capfd)
    for epoch in range(1, EPOCHS + 1):
        lines = [line for line in printed.splitlines() if re.search(rf"\bepoch {epoch}/{EPOCHS} epoch={epoch} train_loss=", line)]
        assert len(lines) == 1, printed[-3000:]
    assert "\r" not in printed and "\x1b" not in printed, repr(printed[-2000:])
    assert "%|" not in printed and "steps/s" not in printed  # no bar, not even a final one


@pytest.mark.slow
def test_on_a_terminal_one_bar_per_epoch_from_rank_0(local_ray, dataset, tmp_path, capfd, console):
    """The driver's console is a terminal (as ``console_for_workers`` finds it): the workers are
    told so and rank 0 draws its epoch bars through the driver; the summary lines stay single."""
    console.setenv(TERMINAL_ENV, "1")
    printed = _run(dataset, tmp_path, capfd)
    bars = re.findall(r"\(pid=(\d+)\)\s*(?:\x1b\[[0-9;]*m)*\s*epoch (\d+):\s+\d+%\|", printed)
    assert {epoch for _, epoch in bars} == {str(e) for e in range(1, EPOCHS + 1)}, repr(printed[-2000:])
    assert len({pid for pid, _ in bars}) == 1  # rank 0 alone
    for epoch in range(1, EPOCHS + 1):
        assert len(re.findall(rf"\bepoch {epoch}/{EPOCHS} epoch={epoch} train_loss=", printed)) == 1


def test_driver_tells_workers_what_its_console_is(monkeypatch):
    """Not a terminal here (pytest captures): workers hear "0", Ray's prefixes lose their colours."""
    monkeypatch.delenv(TERMINAL_ENV, raising=False)
    monkeypatch.setenv("RAY_COLOR_PREFIX", "unset")
    monkeypatch.delenv("RAY_COLOR_PREFIX")
    assert console_for_workers() == {TERMINAL_ENV: "0"}
    assert os.environ["RAY_COLOR_PREFIX"] == "0"
    monkeypatch.setenv(TERMINAL_ENV, "1")  # a worker whose driver is on a terminal
    monkeypatch.setenv("DISTREC_QUIET", "0")
    with progress(total=3, desc="epoch 1", unit="steps") as bar:
        assert hasattr(bar, "n")  # a real bar
    monkeypatch.setenv("DISTREC_QUIET", "1")
    with progress(total=3, desc="epoch 1", unit="steps") as bar:
        assert not hasattr(bar, "n")  # quiet wins, terminal or not
    monkeypatch.setenv(TERMINAL_ENV, "0")
    monkeypatch.setenv("DISTREC_QUIET", "0")
    with progress(total=3, desc="epoch 1", unit="steps") as bar:
        assert not hasattr(bar, "n")
