"""``jobs/tune.py --resume`` unpickles only Tune state this sweep wrote.

A real sweep (EASE λ, two trials) records an HMAC of each of Tune's state files; copies of its
folder are then tampered with as someone with write access to it could: a pickle whose payload
creates a file planted over ``tuner.pkl``, a cloudpickle payload inside the JSON experiment
state, extra state files Tune would load as the newest, the record deleted, the key swapped or
left readable by others. Each ``--resume`` exits 2 with one line naming the file, no traceback,
and the payload never runs; the untampered sweep resumes.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from distrec.config import load_config
from distrec.errors import UserError
from distrec.tune.config import SweepConfig
from distrec.tune.run import sweep
from distrec.tune.signing import KEEP, RECORD, check_experiment, key_path, record_tuner
from distrec.tune.signing import _record as record
from jobs.tune import main
from tests.helpers import tiny_synthetic

ROOT = Path(__file__).resolve().parents[2]


def _system(command: str) -> bytes:
    """A protocol-4 pickle of ``os.system(command)``."""

    def text(value: str) -> bytes:
        return b"\x8c" + bytes([len(value.encode())]) + value.encode()

    return b"\x80\x04" + text("os") + text("system") + b"\x93" + text(command) + b"\x85" + b"R" + b"."


def _resume(path: Path, capsys) -> tuple[int, str]:
    code = main(["--resume", str(path), "--quiet"])
    return code, capsys.readouterr().err


@pytest.mark.slow
def test_tampered_tune_state_is_refused_before_it_is_unpickled(tmp_path, local_ray, monkeypatch, capsys, distrec_home):
    monkeypatch.chdir(ROOT)
    data = str(tmp_path / "data")
    tiny_synthetic(data, users=200, items=120, ratings=6_000, split="user-ratio:0.8/0.1/0.1")
    out = tmp_path / "sweep"
    config = tmp_path / "sweep.yaml"
    config.write_text(
        f"base: configs/ease/ml-1m.yaml\njob: fit\noverrides: [data.path={data}, data.split=null]\n"
        "search:\n  model.lambdas: {grid: [[1], [30]]}\n"
        f"metric: val_hr@100\nmode: max\nnum_samples: 1\nscheduler: {{name: fifo}}\noutput_dir: {out}\n"
    )
    sweep(load_config(SweepConfig, config))
    capsys.readouterr()

    key = key_path()
    assert key == distrec_home / "tune-hmac.key" and key.stat().st_mode & 0o777 == 0o600
    recorded = json.loads((out / RECORD).read_text())["files"]
    experiment = out / "experiment"
    states = sorted(p.name for p in experiment.iterdir() if p.is_file() and p.suffix in (".json", ".pkl"))
    assert "tuner.pkl" in states and any(n.startswith("experiment_state-") for n in states)
    assert set(states) <= set(recorded)  # everything Tune left to restore from was recorded

    marker = tmp_path / "PWNED"
    live = tmp_path / "live"
    pickle.loads(_system(f"touch {live}"))
    assert live.exists()  # the payload does run under plain pickle

    def copy(name: str) -> Path:
        target = tmp_path / name
        shutil.copytree(out, target)
        return target

    def refused(path: Path, expected: str) -> None:
        code, err = _resume(path, capsys)
        assert code == 2, err
        assert expected in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
        assert not marker.exists()

    # the repro, as a user runs it: a planted tuner.pkl
    planted = copy("planted")
    (planted / "experiment" / "tuner.pkl").write_bytes(_system(f"touch {marker}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DISTREC_QUIET": "1"}
    done = subprocess.run([sys.executable, "jobs/tune.py", "--resume", str(planted), "--quiet"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert f"{planted}/experiment/tuner.pkl: changed since this sweep wrote it" in done.stderr
    assert "Traceback" not in done.stderr
    assert not marker.exists()

    # a valid JSON experiment state whose controller state is a cloudpickle payload
    state_json = copy("state_json")
    [state_file] = (state_json / "experiment").glob("experiment_state-*.json")
    state = json.loads(state_file.read_text())
    state["runner_data"] = {"_type": "CLOUDPICKLE_FALLBACK", "value": _system(f"touch {marker}").hex()}
    state_file.write_text(json.dumps(state))
    refused(state_json, f"{state_file}: changed since this sweep wrote it")

    # extra state files that a restore would load as the newest of their kind
    for name in ("callback-states-9999-12-31_23-59-59.pkl", "basic-variant-state-9999-12-31_23-59-59.json"):
        extra = copy(f"extra-{name[:8]}")
        (extra / "experiment" / name).write_bytes(_system(f"touch {marker}"))
        refused(extra, f"{extra}/experiment/{name}: not written by this sweep (no HMAC recorded in {extra}/{RECORD})")

    no_record = copy("no_record")
    (no_record / RECORD).unlink()
    refused(no_record, f"{no_record}/{RECORD}: missing")

    other_key = tmp_path / "other-home"
    monkeypatch.setenv("DISTREC_HOME", str(other_key))
    other_key.mkdir(mode=0o700)
    (other_key / "tune-hmac.key").write_text("ab" * 32)
    os.chmod(other_key / "tune-hmac.key", 0o600)
    refused(copy("other_key"), "changed since this sweep wrote it")
    monkeypatch.setenv("DISTREC_HOME", str(distrec_home))

    os.chmod(key, 0o644)
    refused(copy("open_key"), f"{key}: readable or writable by others (mode 644)")
    os.chmod(key, 0o600)

    # the untampered sweep resumes (Tune finds both trials finished) and keeps its record valid
    code, err = _resume(out, capsys)
    assert code == 0, err
    assert not marker.exists()
    code, err = _resume(out, capsys)
    assert code == 0, err


def test_the_last_versions_of_each_file_stay_valid(tmp_path):
    """Tune's uploads may lag its saves: any of the last KEEP recorded versions passes the check,
    an older one does not; the key is made on first use with mode 0600."""
    out, experiment = tmp_path / "sweep", tmp_path / "sweep" / "experiment"
    experiment.mkdir(parents=True)
    (experiment / "tuner.pkl").write_bytes(b"tuner")
    record_tuner(str(out), "experiment")
    assert key_path().stat().st_mode & 0o777 == 0o600
    versions = [f'{{"save": {i}}}'.encode() for i in range(KEEP + 1)]
    for version in versions:
        record(str(out), {"experiment_state-1.json": version})
    for version in versions[1:]:
        (experiment / "experiment_state-1.json").write_bytes(version)
        check_experiment(str(out), "experiment")
    (experiment / "experiment_state-1.json").write_bytes(versions[0])
    with pytest.raises(UserError, match="experiment_state-1.json: changed since this sweep wrote it"):
        check_experiment(str(out), "experiment")
