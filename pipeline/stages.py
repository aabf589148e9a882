"""The four stages of a session, built (not loaded) from the config's registry names."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import registry
from .config import CascadeConfig


@dataclass
class Stages:
    vad: Any
    asr: Any
    llm: Any
    tts: Any

    def all(self) -> list[Any]:
        return [self.vad, self.asr, self.llm, self.tts]


def build_stages(config: CascadeConfig) -> Stages:
    """Construct (not load) each configured backend from the registry."""
    made = {}
    for kind in registry.KINDS:
        cfg = getattr(config, kind)
        backend = next(b for b in registry.backends(kind).values() if type(cfg) is b.config_cls)
        made[kind] = backend.factory(cfg)
    return Stages(**made)
