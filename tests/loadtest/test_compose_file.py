"""docker-compose.yml describes the cluster ``make cluster`` runs: Redis with AOF always, three
tandtid nodes each with its own name, advertised address and data volume, one of them seeding,
and nginx in front of exactly those nodes with the project's one nginx configuration. No Docker
engine runs here: this reads the file (``yaml.safe_load``, merge keys included) and checks it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from loadtest.nginx import compose_config, nginx_binary

REPO = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return loaded


def option(command: list[str], name: str) -> str | None:
    return command[command.index(name) + 1] if name in command else None


def nodes(services: dict[str, Any]) -> dict[str, list[str]]:
    """service name -> its ``tandtid serve`` command."""
    return {
        name: service["command"]
        for name, service in services.items()
        if service.get("command", [])[:2] == ["tandtid", "serve"]
    }


def test_redis_keeps_every_acknowledged_write() -> None:
    command = compose()["services"]["redis"]["command"]
    assert option(command, "--appendonly") == "yes"
    assert option(command, "--appendfsync") == "always"


def test_three_nodes_each_with_its_own_name_address_and_data_on_the_one_redis() -> None:
    services = compose()["services"]
    found = nodes(services)
    assert len(found) == 3
    names = {option(c, "--node") for c in found.values()}
    assert len(names) == 3 and None not in names
    for service, command in found.items():
        # the address other nodes forward to: this service's name on the compose network
        assert option(command, "--advertise") == f"http://{service}:8000"
        assert option(command, "--redis") == "redis://redis:6379/0"
        assert services[service]["environment"]["TANDTID_DATA_DIR"] == "/data"
        assert "ports" not in services[service]  # reached through nginx only
    volumes = [v.split(":")[0] for s in found for v in services[s]["volumes"] if v.endswith(":/data")]
    assert len(set(volumes)) == 3
    seeding = [s for s, c in found.items() if "--seed-if-empty" in c or "--seed" in c]
    assert len(seeding) == 1
    # the others start once the seeding node is ready (a seed before any lease)
    for service in set(found) - set(seeding):
        assert services[service]["depends_on"][seeding[0]]["condition"] == "service_healthy"


def test_nginx_is_in_front_of_exactly_those_nodes_with_the_projects_configuration() -> None:
    services = compose()["services"]
    nginx = services["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["ports"] == ["8000:80"]
    text = (REPO / "deploy" / "nginx.conf").read_text()
    assert text == compose_config(), (
        "deploy/nginx.conf is stale: python -m loadtest.nginx > deploy/nginx.conf"
    )
    upstream = re.search(r"upstream tandtid \{(.*?)\}", text, re.S)
    assert upstream is not None
    servers = re.findall(r"server (\S+) ", upstream.group(1))
    advertised = {option(c, "--advertise") for c in nodes(services).values()}
    assert {f"http://{s}" for s in servers} == advertised
    assert set(nginx["depends_on"]) == set(nodes(services))
    assert "proxy_set_header Upgrade $http_upgrade;" in text
    assert "proxy_next_upstream error timeout" in text


def test_nginx_accepts_the_compose_configuration(tmp_path: Path) -> None:
    """``nginx -t`` on deploy/nginx.conf, the node names (resolved by Docker's network) standing
    for local addresses and its /tmp paths moved into the test's directory."""
    text = re.sub(
        r"server node\d:8000", "server 127.0.0.1:8000", (REPO / "deploy" / "nginx.conf").read_text()
    )
    config = tmp_path / "nginx.conf"
    config.write_text(text.replace("/tmp/", f"{tmp_path}/"))
    done = subprocess.run(
        [nginx_binary(), "-t", "-c", str(config), "-p", str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
