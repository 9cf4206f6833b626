"""The production-shape files: docker-compose, topic creation, Prometheus rules, Grafana.

There is no Docker engine in CI, so this checks what can be checked without one:
the compose file with ``docker-compose config``, the rules with ``promtool``
(syntax and behaviour on synthetic series), and every metric name the rules and
the dashboard use against the names a real ``WorkerMetrics`` registry exports.
Each external tool's test is skipped, with the reason, when the tool is missing.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from spendsentry.worker.metrics import WorkerMetrics
from spendsentry.worker.topics import TopicsConfig

yaml = pytest.importorskip("yaml", reason="pyyaml is in the [dev] extra")

pytestmark = pytest.mark.timeout(60)

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
PROM = REPO / "deploy" / "prometheus"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "spendsentry.json"
METRIC = re.compile(r"\bspendsentry_[a-z0-9_]+\b")


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (CI installs it with apt; see .ci/run)")
    return path


def _run(*argv: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


def exported_names() -> set[str]:
    """Every sample name a worker's /metrics can contain."""
    registry = CollectorRegistry()
    WorkerMetrics.create(registry)
    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names = set()
    for family in registry.collect():
        for suffix in suffixes[family.type]:
            names.add(family.name + suffix)
    return names


def compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return doc


# -- docker-compose -------------------------------------------------------------


def test_compose_config_is_valid() -> None:
    tool = _tool("docker-compose")
    for profile in ([], ["--profile", "demo"]):
        result = _run(tool, "-f", str(COMPOSE), *profile, "config", "-q")
        assert result.returncode == 0, result.stderr


def test_compose_has_the_production_shape() -> None:
    services = compose()["services"]
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert kafka["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft
    workers = [s for name, s in services.items() if name.startswith("worker-")]
    assert len(workers) == 2
    groups = {w["command"][w["command"].index("--group") + 1] for w in workers}
    assert groups == {"spendsentry"}, "both workers in one consumer group"
    for w in workers:
        assert w["environment"]["SPENDSENTRY_BROKER"] == "kafka:9092"
        assert w["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
        # Reachable by Prometheus inside the network: the image binds all interfaces
        # (SPENDSENTRY_WEB_HOST) and nothing here narrows it.
        assert "--web-host" not in w["command"] and "SPENDSENTRY_WEB_HOST" not in w["environment"]
        assert "--web-port" not in w["command"]  # the port is the image's variable
        # Signs out of the box, and runs the policies of the checkout.
        assert w["environment"]["SPENDSENTRY_THROTTLE_KEY"]
        assert "./streams/policies:/app/streams/policies:ro" in w["volumes"]
    assert "SPENDSENTRY_WEB_HOST=0.0.0.0" in (REPO / "Dockerfile").read_text()
    assert services["simulator"]["profiles"] == ["demo"]
    assert "simulator" not in [n for n, s in services.items() if "profiles" not in s]
    # Every file the compose file mounts exists in the repository.
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), source
    # Published ports stay on loopback.
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), port


def test_topic_init_matches_streams_topics_toml() -> None:
    """deploy/kafka/create-topics.sh creates exactly the topics of streams/topics.toml."""
    expected = {s.name: (s.partitions, dict(s.config)) for s in TopicsConfig.load(
        REPO / "streams" / "topics.toml").specs()}  # fmt: skip
    found: dict[str, tuple[int, dict[str, str]]] = {}
    for line in (REPO / "deploy" / "kafka" / "create-topics.sh").read_text().splitlines():
        if not line.startswith("create --topic"):
            continue
        args = shlex.split(line)[1:]
        name = args[args.index("--topic") + 1]
        partitions = int(args[args.index("--partitions") + 1])
        configs = dict(args[i + 1].split("=", 1) for i, a in enumerate(args) if a == "--config")
        found[name] = (partitions, configs)
    assert found == expected


def test_dockerfile_runs_as_non_root_with_a_metrics_healthcheck() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"^HEALTHCHECK .*\n?.*/metrics", text, re.M)
    assert "pip install --no-deps -c constraints.txt ." in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".git" in ignored and ".venv" in ignored
    assert "examples" not in ignored and "constraints.txt" not in ignored


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_image_and_ci_install_the_pinned_versions_of_every_dependency() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    wanted |= {_name(r) for extra in project["optional-dependencies"].values() for r in extra}
    pinned = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pinned[_name(name)] = version
    assert wanted <= set(pinned), f"not pinned: {sorted(wanted - set(pinned))}"
    assert "spendsentry" not in pinned
    assert "-c constraints.txt" in (REPO / ".ci" / "run").read_text()
    assert "-c constraints.txt -r" in (REPO / "Dockerfile").read_text()


# -- Prometheus -----------------------------------------------------------------


def test_promtool_check_rules_and_config() -> None:
    promtool = _tool("promtool")
    result = _run(promtool, "check", "rules", "rules.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run(promtool, "check", "config", "prometheus.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests() -> None:
    promtool = _tool("promtool")
    result = _run(promtool, "test", "rules", "rules_test.yml", cwd=PROM)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_rules_cover_the_operational_cases_and_use_real_metrics() -> None:
    doc = yaml.safe_load((PROM / "rules.yml").read_text())
    every = [r for g in doc["groups"] for r in g["rules"]]
    rules = {r["alert"]: r for r in every if "alert" in r}
    assert {
        "SpendsentryWorkerDown",
        "SpendsentryConsumerLagHigh",
        "SpendsentryDeadLettersRising",
        "SpendsentryCriticalSpendAlert",
        "SpendsentryThrottlesActive",
        "SpendsentryLateShareRising",
        "SpendsentryUnpricedModel",
    } <= set(rules)
    names = exported_names()
    for record in (r for r in every if "record" in r):
        used = set(METRIC.findall(record["expr"]))
        assert used and used <= names, f"{record['record']} uses {used - names}"
    for alert, rule in rules.items():
        used = set(METRIC.findall(rule["expr"]))
        assert used <= names, f"{alert} uses {used - names}, not exported by the worker"
        assert rule["labels"]["severity"] in ("info", "warning", "critical")
        assert rule["annotations"]["summary"]


# -- Grafana --------------------------------------------------------------------


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows hold theirs
    return out


def test_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    names = exported_names()
    exprs = [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard)
        for target in panel.get("targets", [])
    ]
    assert len(exprs) >= 10
    for title, expr in exprs:
        used = set(METRIC.findall(expr))
        assert used, f"panel {title!r} queries no spendsentry metric: {expr}"
        assert used <= names, f"panel {title!r} uses {used - names}"
    text = " ".join(e for _, e in exprs)
    # What the dashboard is for: cost per use case, cost per outcome, alerts, throttles.
    assert "sum by (use_case) (rate(spendsentry_cost_usd_total" in text
    assert 'spendsentry_events_total{kind="outcome"}' in text
    assert "spendsentry_alerts_total" in text and "spendsentry_active_throttles" in text
    # What explains the input: formats, skips, unpriced models, dead letters, late share.
    for explains in (
        "spendsentry_input_events_total",
        "spendsentry_input_skipped_total",
        "spendsentry_unpriced_events_total",
        "sum by (reason, use_case) (rate(spendsentry_dead_letters_total",
        "rate(spendsentry_late_events_total",
    ):
        assert explains in text, explains
    ids = [p["id"] for p in _panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    base = REPO / "deploy" / "grafana" / "provisioning"
    sources = yaml.safe_load((base / "datasources" / "prometheus.yml").read_text())
    uid = sources["datasources"][0]["uid"]
    assert sources["datasources"][0]["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in _panels(dashboard):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == uid, panel["title"]
    providers = yaml.safe_load((base / "dashboards" / "spendsentry.yml").read_text())
    mounted = providers["providers"][0]["options"]["path"]
    grafana = compose()["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{mounted}:ro" in grafana["volumes"]
