"""The service images, checked as text (no Docker here): multi-stage, a
pinned base, a non-root numeric user, no build tools at run time, a health
check, and the entry point and files each service really needs. Ingest,
validator and monitor share deploy/docker/Dockerfile (``--build-arg
SERVICE=<name>``); prep and the trainer have their own."""

from __future__ import annotations

import ast
import fnmatch
import re
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pyspark
import pytest
import yaml
from deploy_support import REPO, SHARED_DOCKERFILE, dockerfile_of

pytestmark = pytest.mark.unit

SERVICES = ("ingest", "prep", "trainer", "validator", "monitor")
BUILD_TOOLS = re.compile(r"^(build-essential|gcc|g\+\+|clang|make|cmake|pkg-config|git|.+-dev)$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [arg for name, arg in self.instructions if name == instruction]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile."""
    logical = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical.splitlines():
        if not line.strip():
            continue
        instruction, _, arg = line.strip().partition(" ")
        instruction, arg = instruction.upper(), arg.strip()
        if instruction == "FROM":
            base, _, name = arg.partition(" AS ")
            stages.append(Stage(base.strip(), name.strip() or None))
        elif stages:
            stages[-1].instructions.append((instruction, arg))
        elif instruction == "ARG":
            key, _, default = arg.partition("=")
            global_args[key] = default
    return global_args, stages


def resolve(reference: str, global_args: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], reference)


def dockerfile(service: str) -> tuple[dict[str, str], list[Stage]]:
    return parse((REPO / dockerfile_of(service)).read_text())


def entry_command(service: str, module: str | None = None) -> list[str]:
    """What the image runs after tini: the shared image's launcher, written at build time, read back
    (``module``: the MODULE build argument, default ``services.<service>``)."""
    _, stages = dockerfile(service)
    (entrypoint,) = stages[-1].args("ENTRYPOINT")
    command = ast.literal_eval(entrypoint)  # exec form: SIGTERM reaches tini, then the service
    assert command[:2] == ["tini", "--"]
    if dockerfile_of(service) != SHARED_DOCKERFILE:
        return command[2:]
    assert command[2:] == ["streamml-service"]
    assert "SERVICE" in stages[-1].args("ARG"), "the final stage must declare ARG SERVICE to see its value"
    (launcher,) = [run for run in stages[-1].args("RUN") if "/usr/local/bin/streamml-service" in run]
    template = re.search(r"printf '([^']*)' \"\$\{MODULE\}\"", launcher)[1]
    (default,) = [arg.split("=", 1)[1] for arg in stages[-1].args("ARG") if arg.startswith("MODULE=")]
    script = template.replace("\\n", "\n") % (module or default.replace("${SERVICE}", service))
    (line,) = [line for line in script.splitlines() if line.startswith("exec ")]
    return [word for word in line.split()[1:] if word != '"$@"']  # the arguments pass through


def dockerignore_allows(path: str) -> bool:
    """Docker's rule: the last matching pattern wins, and a pattern matching a
    parent folder matches everything in it."""
    patterns = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    included = True
    for pattern in patterns:
        negated = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        if any(fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c, pattern.removeprefix("**/"))
               for c in candidates):
            included = negated
    return included


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_multi_stage_with_a_pinned_base(service):
    global_args, stages = dockerfile(service)
    assert len(stages) >= 2, "build tools belong in a build stage, not in the image"
    for stage in stages:
        base = resolve(stage.base, global_args)
        if base in {s.name for s in stages}:
            continue
        image, _, tag = base.partition(":")
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{service}: base {base!r} is not pinned"


@pytest.mark.parametrize("service", SERVICES)
def test_image_runs_as_a_numeric_non_root_user(service):
    _, stages = dockerfile(service)
    users = stages[-1].args("USER")
    assert users, f"{service}: the final stage sets no USER"
    # Kubernetes' runAsNonRoot can only verify a numeric UID.
    assert users[-1].isdigit() and int(users[-1]) != 0


@pytest.mark.parametrize("service", SERVICES)
def test_final_image_installs_no_build_tools(service):
    _, stages = dockerfile(service)
    for run in stages[-1].args("RUN"):
        for command in re.findall(r"apt-get install ([^&;|]+)", run):
            packages = [word for word in command.split() if not word.startswith("-")]
            assert not [p for p in packages if BUILD_TOOLS.match(p)], f"{service}: {packages}"
        assert "pip install" not in run, f"{service}: packages are installed in the build stage"


@pytest.mark.parametrize("service", SERVICES)
def test_image_starts_the_service_under_an_init_with_a_health_check(service):
    _, stages = dockerfile(service)
    final = stages[-1]
    assert entry_command(service)[-3:] == ["python", "-m", f"services.{service}"]
    (healthcheck,) = final.args("HEALTHCHECK")
    assert healthcheck.endswith('CMD ["streamml-healthcheck"]')
    copies = " ".join(final.args("COPY"))
    assert "deploy/docker/healthcheck.py /usr/local/bin/streamml-healthcheck" in copies
    env = " ".join(final.args("ENV"))
    assert "STREAMML_HTTP_HOST=0.0.0.0" in env  # the services listen on 127.0.0.1 by default
    assert "STREAMML_STATE_DIR=/var/lib/streamml" in env


@pytest.mark.parametrize("service", SERVICES)
def test_image_installs_the_torch_version_the_project_pins(service):
    global_args, _ = dockerfile(service)
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if d.replace(" ", "").startswith("torch==")]
    assert global_args["TORCH_VERSION"] == pin.split("==")[1]


@pytest.mark.parametrize("service", SERVICES)
def test_everything_copied_is_in_the_build_context(service):
    _, stages = dockerfile(service)
    for stage in stages:
        for copy in stage.args("COPY"):
            if "--from=" in copy:
                continue
            sources = [w for w in copy.split() if not w.startswith("--")][:-1]
            for source in sources:
                assert dockerignore_allows(source), f"{service}: .dockerignore leaves out {source}"
                assert (REPO / source).exists(), f"{service}: COPY {source}: no such file"


def test_dockerignore_keeps_local_state_out():
    for path in (".venv/bin/python", ".streamml/config.yaml", "vendor/jars/hadoop-aws-3.3.1.jar",
                 ".git/HEAD", "streamml/__pycache__/x.pyc"):
        assert not dockerignore_allows(path), path
    assert dockerignore_allows("streamml/settings.py")


def test_trainer_runs_on_a_cuda_runtime_base():
    global_args, stages = dockerfile("trainer")
    base = resolve(stages[-1].base, global_args)
    assert re.match(r"^nvidia/cuda:12\.\d+\.\d+-runtime-", base), base
    # The torch wheel index must be a CUDA build, not the CPU one.
    assert re.search(r"/whl/cu\d+$", global_args["TORCH_INDEX"])


def test_prep_image_has_java_and_the_s3a_jars_prep_loads():
    global_args, stages = dockerfile("prep")
    final = stages[-1]
    assert any("openjdk-17-jre-headless" in run for run in final.args("RUN"))
    # services/prep/spark.py looks for vendor/jars under the working folder.
    (workdir,) = final.args("WORKDIR")
    assert any(copy.endswith(f"{workdir}/vendor/jars") for copy in final.args("COPY"))
    spark = ast.parse((REPO / "services" / "prep" / "spark.py").read_text())
    (wanted,) = [ast.literal_eval(node.value) for node in spark.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "S3A_JARS"]
    script = (REPO / "scripts" / "install_spark_jars.sh").read_text()
    pinned = set(re.findall(r"\[([\w.-]+\.jar)\]=[0-9a-f]{64}", script))
    assert set(wanted) == pinned, "the image installs other jars than prep loads"
    # Java needs a passwd entry for the UID; OpenShift's arbitrary UIDs have none.
    (entrypoint,) = final.args("ENTRYPOINT")
    assert "streamml-nss-entrypoint" in entrypoint
    assert any("libnss-wrapper" in run for run in final.args("RUN"))


def test_the_console_image_is_the_shared_one_running_the_console_module():
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    args = compose["services"]["console"]["build"]["args"]
    assert args == {"SERVICE": "console", "MODULE": "streamml.console"}
    assert compose["services"]["console"]["build"]["dockerfile"] == SHARED_DOCKERFILE
    assert entry_command("console", args["MODULE"])[-3:] == ["python", "-m", "streamml.console"]
    assert (REPO / "streamml" / "console" / "__main__.py").is_file()


def test_the_executor_launcher_starts_a_class_the_installed_spark_has():
    """Executor pods (k8s:// master) run prep's image through deploy/docker/spark-executor.sh."""
    script = (REPO / "deploy" / "docker" / "spark-executor.sh").read_text()
    (main_class,) = re.findall(r"org\.apache\.spark\.[\w.]+", script)
    jars = Path(pyspark.__file__).parent / "jars"
    (kubernetes_jar,) = jars.glob("spark-kubernetes_*.jar")
    assert main_class.replace(".", "/") + ".class" in zipfile.ZipFile(kubernetes_jar).namelist()
    _, stages = dockerfile("prep")
    assert any(copy.startswith("--chmod=0755 deploy/docker/spark-executor.sh ")
               for copy in stages[-1].args("COPY"))
