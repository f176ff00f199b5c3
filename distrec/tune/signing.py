"""HMACs of Ray Tune's pickled state, so that ``--resume`` unpickles only what this sweep wrote.

``Tuner.restore`` (Ray 2.60) unpickles, from the experiment folder: ``tuner.pkl``; the newest
``experiment_state-<session>.json`` (JSON whose trial and controller state is cloudpickled
inside); and, after copying every top-level ``*.json`` and ``*.pkl`` to a local staging folder,
the newest search-algorithm state (``basic-variant-state-*.json``, ``search_gen_state-*.json``,
``searcher-state-*.pkl``: cloudpickle whatever the suffix) and callback state
(``callback-states-*.pkl``). Whoever can write the sweep's folder could so run code in the
driver of ``--resume``. (Trial folders' ``params.pkl`` and ``error.pkl`` are not read by a
restore: it resets the errors of the trials it resumes.)

So a sweep records an HMAC-SHA256 of every such file in ``<output_dir>/tune_state.hmac.json``,
keyed with a secret kept outside the run directory: ``$DISTREC_HOME/tune-hmac.key``, else
``~/.config/distrec/tune-hmac.key``, created on first use with mode 0600. ``check_experiment``
refuses, before anything is unpickled, a top-level ``*.json`` / ``*.pkl`` of the experiment folder
that is not recorded or has changed (and a key that others may read).

When Tune writes them: ``tuner.pkl`` once, as the Tuner is built (``record_tuner`` reads it back
at once). The others at every save of the experiment state (every ``checkpoint_period``, at
least 10 s unless ``TUNE_GLOBAL_CHECKPOINT_S`` says otherwise, and once more at the end): into
the driver's local staging folder, then uploaded to ``output_dir`` in the background. A save
asks the callbacks for their state as its last step, before the upload starts; ``StateSigner``
records the staged files then, so every version that reaches ``output_dir`` was recorded first,
even if the driver is killed the next moment (and once more when the experiment ends, for a
resumed sweep with nothing left to run). An upload can lag behind the saves (a save does not
start one while the previous upload runs), so the last ``KEEP`` versions of each file stay
valid.

Not covered: a file swapped in the window between the check and Tune's read of it, by someone
writing the folder while ``--resume`` starts; a sweep's own older state within the last
``KEEP`` versions (harmless: it was ours).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import posixpath
import secrets
import tempfile
from pathlib import Path
from typing import Any

from ray import tune

from distrec.errors import UserError
from distrec.storage import filesystem, is_local, join, read_text, write_text

__all__ = ["RECORD", "TUNER_PKL", "StateSigner", "check_experiment", "key_path", "record_tuner"]

RECORD = "tune_state.hmac.json"
TUNER_PKL = "tuner.pkl"
KEY_FILE = "tune-hmac.key"
KEEP = 16  # versions of each file that stay valid (an upload in flight lags by one or two saves)


def key_path() -> Path:
    """Where the key lives: ``$DISTREC_HOME/tune-hmac.key``, else ``~/.config/distrec/tune-hmac.key``."""
    home = os.environ.get("DISTREC_HOME")
    return Path(home, KEY_FILE) if home else Path.home() / ".config" / "distrec" / KEY_FILE


class StateSigner(tune.Callback):
    """A Tune callback that records the staged state files at every save of the experiment state
    (it keeps no state of its own, so Tune writes no ``callback-states-*.pkl``)."""

    def __init__(self, *, output_dir: str) -> None:
        _key(create=True)  # a key that cannot be made fails the sweep before Tune writes anything
        self.output_dir = output_dir
        self._trials: list = []

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        self._trials = trials  # the controller's own list: a step's new trials join it before its save

    def get_state(self) -> None:
        """Called by every save, after the state files are staged and before their upload."""
        self._record_staged()
        return None

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """After the last save (uploaded by now): a resumed sweep with nothing left to run takes
        no step, so its one save happened before any ``on_step_begin`` handed over the trials."""
        self._trials = trials
        self._record_staged()

    def _record_staged(self) -> None:
        if self._trials:  # the trials know the controller's staging folder
            staging = Path(self._trials[0].storage.experiment_driver_staging_path)
            files = {p.name: p.read_bytes() for p in staging.iterdir() if _is_state(p.name) and p.is_file()}
            _record(self.output_dir, files)


def record_tuner(output_dir: str, experiment: str) -> None:
    """Record ``tuner.pkl``, which ``tune.Tuner(...)`` has just written."""
    fs, root = filesystem(join(output_dir, experiment, TUNER_PKL))
    _record(output_dir, {TUNER_PKL: fs.cat_file(root)})


def check_experiment(output_dir: str, experiment: str) -> None:
    """Refuse (UserError naming the file) any state file in ``output_dir/experiment`` that this
    sweep did not record, before Tune reads one."""
    record_uri = join(output_dir, RECORD)
    recorded = _read_record(record_uri)
    if recorded is None:
        raise UserError(
            f"{record_uri}: missing, so nothing shows that the Tune state in {join(output_dir, experiment)} was written by this "
            "sweep, and it is not unpickled. Delete that folder to start the sweep again"
        )
    key = _key(create=False)
    fs, root = filesystem(join(output_dir, experiment))
    try:
        names = sorted(posixpath.basename(p["name"].rstrip("/")) for p in fs.ls(root, detail=True) if p["type"] == "file")
    except FileNotFoundError:
        names = []
    if TUNER_PKL not in names:
        raise UserError(f"{join(output_dir, experiment, TUNER_PKL)}: missing; not a sweep jobs/tune.py can resume")
    for name in filter(_is_state, names):
        uri = join(output_dir, experiment, name)
        versions = recorded.get(name)
        if not versions:
            raise UserError(f"{uri}: not written by this sweep (no HMAC recorded in {record_uri}); refusing to unpickle it")
        if not any(hmac.compare_digest(_mac(key, name, fs.cat_file(f"{root}/{name}")), v) for v in versions):
            raise UserError(
                f"{uri}: changed since this sweep wrote it "
                f"(its HMAC is not one {record_uri} records, with the key {key_path()}); "
                "refusing to unpickle it"
            )


def _is_state(name: str) -> bool:
    """The files a restore may unpickle: every top-level ``*.json`` and ``*.pkl`` but Tune's
    temporary dot-files (its patterns never match those)."""
    return name.endswith((".json", ".pkl")) and not name.startswith(".")


def _mac(key: bytes, name: str, data: bytes) -> str:
    return hmac.new(key, name.encode() + b"\0" + data, hashlib.sha256).hexdigest()


def _record(output_dir: str, files: dict[str, bytes]) -> None:
    """Add the HMACs of ``files`` (name -> bytes) to the record, newest first, ``KEEP`` per name."""
    key = _key(create=True)
    uri = join(output_dir, RECORD)
    recorded = _read_record(uri) or {}
    changed = False
    for name, data in files.items():
        mac = _mac(key, name, data)
        versions = recorded.get(name, [])
        if versions[:1] != [mac]:
            recorded[name] = [mac, *[v for v in versions if v != mac]][:KEEP]
            changed = True
    if changed:
        _write_atomically(uri, json.dumps({"algorithm": "hmac-sha256", "files": recorded}, indent=1))


def _read_record(uri: str) -> dict[str, list[str]] | None:
    """The recorded HMACs by file name; None if there is no record."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return None
    try:
        files = json.loads(read_text(uri))["files"]
        if isinstance(files, dict) and all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in files.values()):
            return files
    except (ValueError, KeyError, TypeError):
        pass
    raise UserError(f"{uri}: not a record of Tune state written by jobs/tune.py")


def _write_atomically(uri: str, text: str) -> None:
    """A local file is replaced in one step (a driver killed mid-write leaves the old record);
    an object store's PUT already is one step."""
    if not is_local(uri):
        write_text(uri, text)
        return
    _, path = filesystem(uri)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tune_state.hmac.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _key(*, create: bool) -> bytes:
    """The secret (32 random bytes, hex), made on first use with mode 0600 in a 0700 folder."""
    path = key_path()
    if create and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tune-hmac.")  # mode 0600
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        try:
            os.link(tmp, path)  # complete or absent: of two sweeps racing here, both use the first key linked
        except FileExistsError:
            pass
        finally:
            os.remove(tmp)
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text().strip()
    except FileNotFoundError:
        raise UserError(
            f"{path}: no key to check this sweep's Tune state with (the key stays on the machine that ran the sweep; "
            "set DISTREC_HOME to the folder holding its tune-hmac.key)"
        ) from None
    if mode & 0o077:
        raise UserError(
            f"{path}: readable or writable by others (mode {mode:o}), so anyone could forge Tune state: chmod 600 {path}"
        )
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise UserError(f"{path}: not a key (expected at least 32 hex digits)")
    return key
