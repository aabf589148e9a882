"""Backend registry: YAML name -> (config class, stage factory).

Each stage module registers itself with :func:`register`. Modules register at
import, and importing them is cheap: heavy dependencies are imported in the
stage's ``start()`` only, so an unselected backend never needs its packages.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from pydantic import BaseModel

from .errors import ConfigError

KINDS = ("vad", "asr", "llm", "tts")


@dataclass(frozen=True)
class Backend:
    kind: str
    name: str
    config_cls: type[BaseModel]
    factory: Callable[[Any], Any]
    summary: str


_REGISTRY: dict[str, dict[str, Backend]] = {k: {} for k in KINDS}

# Modules holding backends; imported once, on first look-up.
_BACKEND_MODULES = (
    "stages.vad_silero",
    "stages.asr_faster_whisper",
    "stages.llm_llama_cpp",
    "stages.llm_openai",
    "stages.tts_piper",
    "stages.tts_espeak",
    "stages.tts_coqui",
)
_loaded = False


def register(kind: str, name: str, config_cls: type[BaseModel], summary: str):
    """Class decorator: register a stage class as backend ``name`` of ``kind``."""
    if kind not in KINDS:
        raise ValueError(f"unknown stage kind {kind!r}")

    def deco(cls):
        _REGISTRY[kind][name] = Backend(kind, name, config_cls, cls, summary)
        return cls

    return deco


def _load_all() -> None:
    global _loaded
    if not _loaded:
        for mod in _BACKEND_MODULES:
            importlib.import_module(mod)
        _loaded = True


def backends(kind: str) -> dict[str, Backend]:
    _load_all()
    return dict(_REGISTRY[kind])


def get(kind: str, name: str) -> Backend:
    found = backends(kind)
    if name not in found:
        valid = ", ".join(sorted(found)) or "(none)"
        raise ConfigError(f"{kind}.backend: unknown backend {name!r}; valid names: {valid}")
    return found[name]
