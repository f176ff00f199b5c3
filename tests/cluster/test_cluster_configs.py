"""The deployment configs under cluster/ keep a cluster locked down: token authentication on every
node, the token from a secret (never in the repo), the dashboard/Jobs API private, S3 through roles.
(tests/cluster/test_multi_node.py shows a real head refusing requests without the token.)"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
CONFIGS = sorted(CLUSTER.rglob("*.yaml"))


def test_there_are_cluster_configs():
    assert {p.name for p in CONFIGS} >= {"aws.yaml", "raycluster.yaml", "rayjob.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_token_auth_private_dashboard_and_no_secrets(path):
    text = path.read_text()
    yaml.safe_load_all(text)  # well-formed
    assert "RAY_AUTH_MODE" in text and re.search(r"RAY_AUTH_MODE\W+(value:\s*)?\"?token", text), f"{path.name}: no token auth"
    assert not re.search(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)\s*[:=]", text), (
        f"{path.name}: S3 credentials in a config"
    )
    assert not re.search(r"RAY_AUTH_TOKEN\s*[:=]\s*[\"']?[0-9a-f]{16,}", text), f"{path.name}: a literal token"
    for host in re.findall(r"dashboard[-_]host[\"']?\s*[:=]\s*[\"']?([\d.]+)", text):
        # 0.0.0.0 only inside a pod, where a ClusterIP service (never a LoadBalancer) is the way in
        assert host == "127.0.0.1" or "serviceType: ClusterIP" in text, f"{path.name}: dashboard on {host}"
    assert not re.search(r"(serviceType|type):\s*(LoadBalancer|NodePort)", text), f"{path.name}: a public service"
