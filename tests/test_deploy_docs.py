"""The deployment notes (docs/deploy.md) and their Kubernetes example (docs/kubernetes/deployment.yaml)
checked against the server: the container's flags are ones `selfmoa serve` and optillm take, the
server started with them answers the probe paths without a key and everything else with it, the
grace period outlasts the drain, the ConfigMap is a valid server file, and the metric names the
notes list are those `metrics.py` defines and serves."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from selfmoa.config import load_server_config
from selfmoa.host import Optillm
from selfmoa.metrics import Metrics
from selfmoa.serve import parser
from selfmoa.sim import BackgroundSim
from selfmoa.testing.live import BIN, Proxy

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "docs" / "kubernetes" / "deployment.yaml"
GUIDE = ROOT / "docs" / "deploy.md"
CONFIG_KEY = "selfmoa.yaml"
PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")  # what Kubernetes fills in from the container's env
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")  # what the server file fills in at start-up
_METRIC = re.compile(r"(selfmoa_[a-z_]+)(?:\{([^}]*)\})?")


# --- the manifest ------------------------------------------------------------------------------------------


def manifest() -> dict[str, dict[str, Any]]:
    """The manifest's objects by kind (one of each)."""
    objects = [doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if doc]
    by_kind = {str(doc["kind"]): doc for doc in objects}
    assert len(by_kind) == len(objects), "one object of each kind"
    assert set(by_kind) == {"ConfigMap", "Deployment", "Service"}
    return by_kind


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = manifest()["Deployment"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    [only] = pod_spec()["containers"]
    return dict(only)


def dummy_env() -> dict[str, str]:
    """The container's secrets as dummy values (hex, as the manifest suggests making the client key:
    not shaped like `sk-...`, which log redaction would catch by its shape alone), and its plain
    values, but no OTEL_* (no collector here)."""
    env: dict[str, str] = {}
    for entry in container().get("env", []):
        name = str(entry["name"])
        if "valueFrom" in entry:
            assert "secretKeyRef" in entry["valueFrom"], f"{name}: keys come from a Secret"
            env[name] = f"{name.lower().replace('_', '')}0123456789abcdef"
        elif not name.startswith("OTEL_"):
            env[name] = str(entry["value"])
    return env


def command_line() -> list[str]:
    """The container's command and args, with `$(VAR)` filled in as Kubernetes would."""
    env = dummy_env()
    names = {str(entry["name"]) for entry in container().get("env", [])}
    words = [str(word) for word in [*container()["command"], *container().get("args", [])]]
    for word in words:
        for name in _REFERENCE.findall(word):
            # Kubernetes leaves an unknown $(VAR) as it is: the server would get the text "$(VAR)"
            assert name in names, f"{word}: {name} is not in the container's env"
    return [_REFERENCE.sub(lambda found: env.get(found.group(1), "unused"), word) for word in words]


def client_key() -> str:
    """The key clients and the scrape must send: `--optillm-api-key`'s (or OPTILLM_API_KEY's)."""
    args = command_line()
    if "--optillm-api-key" in args or any(arg.startswith("--optillm-api-key=") for arg in args):
        return option(args, "--optillm-api-key")
    return dummy_env()["OPTILLM_API_KEY"]


def serve_args() -> list[str]:
    words = command_line()
    assert words[:2] == ["selfmoa", "serve"], words
    return words[2:]


def option(args: list[str], name: str) -> str:
    values = [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == name]
    values += [arg.split("=", 1)[1] for arg in args if arg.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} given {len(values)} times"
    return values[0]


def without(args: list[str], *names: str) -> list[str]:
    """`args` less each `name VALUE` pair."""
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        else:
            kept.append(arg)
    return kept


# --- flags ------------------------------------------------------------------------------------------------


def test_every_flag_is_one_that_selfmoa_serve_or_optillm_takes(monkeypatch: pytest.MonkeyPatch) -> None:
    ours, rest = parser().parse_known_args(serve_args())
    assert not ours.help
    assert ours.workers == 2 and ours.graceful_timeout == 30 and ours.max_in_flight == 2048
    assert ours.log_format == "json" and ours.moa_config
    server = Optillm.load().server  # the rest must parse with optillm's own parser, as `selfmoa serve` does
    monkeypatch.setattr(sys, "argv", ["selfmoa serve", *rest])
    try:
        optillm = server.parse_args()
    except SystemExit as refused:
        raise AssertionError(f"optillm refuses {rest}") from refused
    assert optillm.host == "0.0.0.0", "in a container the server must listen beyond the loopback"
    # as a flag: optillm 0.4 reads an OPTILLM_API_KEY variable as "use local inference" (/v1/models fails)
    assert "OPTILLM_API_KEY" not in dummy_env() and optillm.optillm_api_key == client_key()
    [port] = [p for p in container()["ports"] if p["name"] == "http"]
    assert optillm.port == port["containerPort"]


def test_one_worker_per_cpu_requested() -> None:
    ours, _ = parser().parse_known_args(serve_args())
    assert float(container()["resources"]["requests"]["cpu"]) == ours.workers


def test_the_grace_period_outlasts_the_drain() -> None:
    ours, _ = parser().parse_known_args(serve_args())
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace > ours.graceful_timeout, "the kubelet's SIGKILL would cut the drain short"


# --- the server it describes, running ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def deployed(sim: BackgroundSim, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """`selfmoa serve` with the container's flags, on the loopback in front of the simulator, with
    the ConfigMap's server file and dummy secrets."""
    folder = tmp_path_factory.mktemp("deployed")
    config = folder / CONFIG_KEY
    config.write_text(manifest()["ConfigMap"]["data"][CONFIG_KEY], encoding="utf-8")
    args = without(serve_args(), "--host", "--port", "--base-url", "--moa-config")  # Proxy picks a free port
    command = [str(BIN / "selfmoa"), "serve", *args, "--host", "127.0.0.1", "--base-url", sim.base_url,
               "--moa-config", str(config)]
    running = Proxy(command, log_path=folder / "proxy.log", env=dummy_env())
    yield running
    running.close()  # SIGTERM: every worker drains, then the parent exits
    assert running.process.returncode == 0, running.log()[-3000:]


def probe_paths() -> list[str]:
    paths: list[str] = []
    for name in PROBES:
        probe = container()[name]
        assert probe["httpGet"]["port"] == "http", f"{name} probes the served port"
        paths.append(str(probe["httpGet"]["path"]))
    return paths


def test_the_probe_paths_answer_200_without_the_client_key(deployed: Proxy) -> None:
    assert set(probe_paths()) == {"/health", "/ready"}
    for path in probe_paths():
        assert httpx.get(f"{deployed.url}{path}", timeout=10).status_code == 200, path


def test_metrics_and_models_need_the_key_that_the_scrape_sends(deployed: Proxy) -> None:
    key = client_key()
    assert httpx.get(f"{deployed.url}/metrics", timeout=10).status_code == 401
    bearer = {"Authorization": f"Bearer {key}"}
    chat = httpx.post(f"{deployed.url}/v1/chat/completions", headers=bearer, timeout=60,
                      json={"model": "self_moa-sim-strong", "messages": [{"role": "user", "content": "2 + 2?"}]})
    assert chat.status_code == 200, chat.text
    models = httpx.get(f"{deployed.url}/v1/models", headers=bearer, timeout=30)
    assert models.status_code == 200, models.text  # it is not, were the key passed as OPTILLM_API_KEY
    scraped = httpx.get(f"{deployed.url}/metrics", headers=bearer, timeout=10)
    assert scraped.status_code == 200
    assert 'selfmoa_requests_total{approach="self_moa",status="200"}' in scraped.text
    lines = deployed.log().splitlines()
    assert any('"request_id": "req_' in line for line in lines), "--log-format json gives JSON request lines"
    secrets = [dummy_env()[str(e["name"])] for e in container()["env"] if "valueFrom" in e]
    assert not [value for value in secrets if value in deployed.log()], "keys stay out of the log"


# --- the objects around it --------------------------------------------------------------------------------


def test_the_configmap_is_a_valid_server_file_mounted_where_moa_config_points(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = manifest()["ConfigMap"]["data"][CONFIG_KEY]
    env = dummy_env()
    for name in _ENV_REFERENCE.findall(text):
        assert name in env, f"${{{name}}} in the server file, but not in the container's env"
        monkeypatch.setenv(name, env[name])
    path = tmp_path / CONFIG_KEY
    path.write_text(text, encoding="utf-8")
    config = load_server_config(path)
    ours, _ = parser().parse_known_args(serve_args())
    assert config.caps.timeout < ours.graceful_timeout, "the example says a drain cuts no request"
    [volume] = [v for v in pod_spec()["volumes"] if v.get("configMap", {}).get("name") ==
                manifest()["ConfigMap"]["metadata"]["name"]]
    [mount] = [m for m in container()["volumeMounts"] if m["name"] == volume["name"]]
    assert ours.moa_config == f"{mount['mountPath'].rstrip('/')}/{CONFIG_KEY}"


def test_the_service_selects_the_pods_and_their_port() -> None:
    objects = manifest()
    labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert objects["Deployment"]["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for p in container()["ports"]}
    assert all(p["targetPort"] in ports for p in objects["Service"]["spec"]["ports"])


# --- the notes --------------------------------------------------------------------------------------------


def documented_metrics(text: str, *, table: bool) -> dict[str, set[str]]:
    """Metric name -> labels: from the notes' table rows, or from the lines of metrics.py's docstring."""
    found: dict[str, set[str]] = {}
    for line in text.splitlines():
        head = re.match(r"\|\s*`([^`]+)`", line) if table else re.match(r" {4}(selfmoa_[a-z_]+(?:\{[^}]*\})?)", line)
        if head is None:
            continue
        metric = _METRIC.fullmatch(head.group(1))
        if metric is not None:
            found[metric.group(1)] = {label.strip() for label in (metric.group(2) or "").split(",") if label.strip()}
    return found


def test_the_metrics_the_notes_list_are_those_the_server_defines_and_serves() -> None:
    import selfmoa.metrics

    defined = documented_metrics(selfmoa.metrics.__doc__ or "", table=False)
    assert len(defined) >= 9
    assert documented_metrics(GUIDE.read_text(encoding="utf-8"), table=True) == defined
    served = set(re.findall(r"^# TYPE (\S+) ", Metrics().exposition().decode(), re.MULTILINE))
    assert served == set(defined)


def test_the_notes_yaml_examples_parse() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.DOTALL)
    assert blocks
    for block in blocks:
        assert yaml.safe_load(block) is not None
