"""The multi-node rules without a cluster: which paths other nodes cannot reach, the shared-folder
settings' validation, a job's locations, and the single-machine switch for loopback addresses.
The refusal on a real multi-node cluster: tests/cluster/test_multi_node.py."""

from __future__ import annotations

import pytest

from distrec.config import ConfigError, from_dict
from distrec.jobs import get_job
from distrec.runtime.cluster import unshared
from distrec.runtime.config import RayConfig
from distrec.tune.config import SweepConfig


def test_local_paths_outside_the_shared_folders_are_unshared(tmp_path):
    shared, elsewhere = tmp_path / "nfs", tmp_path / "disk"
    shared.mkdir()
    (elsewhere / "data").mkdir(parents=True)
    (shared / "link").symlink_to(elsewhere / "data")  # a link out of the shared folder
    paths = {
        "a": str(shared / "data"),
        "b": f"file://{shared}/out",
        "c": str(shared / "link"),
        "d": f"{shared}/../disk/x",
        "e": str(elsewhere / "data"),
        "f": "s3://bucket/x",
        "g": "gs://bucket/x",
        "h": "memory://x",
        "i": str(tmp_path / "nfs-other"),  # a sibling whose name starts like the shared folder
        "j": str(shared),  # the shared folder itself
    }
    assert unshared(paths, [str(shared)]) == ["c", "d", "e", "h", "i"]
    assert unshared(paths, []) == ["a", "b", "c", "d", "e", "h", "i", "j"]
    assert unshared(paths, ["/"]) == ["h"]  # every local path declared shared; memory:// never is


@pytest.mark.parametrize("folder", ["relative/dir", "s3://bucket/prefix", "memory://x"])
def test_shared_folders_are_absolute_local_paths(folder, tmp_path):
    with pytest.raises(ConfigError, match=r"ray\.shared_paths.*not an absolute local folder"):
        from_dict(RayConfig, {"shared_paths": [folder]}, source="test")
    sweep = {"base": "b.yaml", "search": {"x": {"choice": [1]}}, "metric": "m", "output_dir": "o", "shared_paths": [folder]}
    with pytest.raises(ConfigError, match="shared_paths.*not an absolute local folder"):
        from_dict(SweepConfig, sweep, source="test")
    ok = from_dict(RayConfig, {"shared_paths": [str(tmp_path), "/", f"file://{tmp_path}"]}, source="test")
    assert ok.shared_paths[1] == "/"


def test_placement_strategy_is_one_of_rays():
    assert RayConfig().placement_strategy == "PACK"
    with pytest.raises(ConfigError, match="placement_strategy"):
        from_dict(RayConfig, {"placement_strategy": "SPREAD_OUT"}, source="test")


def test_a_jobs_locations_are_its_paths_that_are_set():
    from distrec.distill.config import DistillConfig

    on_ray = from_dict(
        DistillConfig, {"data": {"path": "s3://b/d"}, "output_dir": "/o", "ray": {"storage_path": "/r"}}, source="t"
    )
    assert get_job("distill").locations(on_ray) == {"data.path": "s3://b/d", "output_dir": "/o", "ray.storage_path": "/r"}
    here = from_dict(DistillConfig, {"data": {"path": "s3://b/d"}, "output_dir": "/o"}, source="t")  # ray: null
    assert get_job("distill").locations(here) == {"data.path": "s3://b/d", "output_dir": "/o"}


def test_joining_a_loopback_address_switches_off_multi_node_mode_for_the_call():
    import ray._private.ray_constants as ray_constants

    from distrec.runtime.ray import _single_machine

    before = ray_constants.ENABLE_RAY_CLUSTER
    for address, inside in (
        (None, False),
        ("127.0.0.1:6379", False),
        ("localhost:6379", False),
        ("10.0.0.5:6379", before),
        ("auto", before),
    ):
        with _single_machine(address):
            assert ray_constants.ENABLE_RAY_CLUSTER is inside, address
        assert ray_constants.ENABLE_RAY_CLUSTER is before
