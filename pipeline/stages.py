"""The four stages of a session, built (not loaded) from the config's registry names."""
from __future__ import annotations

import asyncio
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


async def start_stages(stages) -> None:
    """Load ``stages`` at once, except those whose load times work on the machine
    (``loads_alone``): each of those after the others, on its own."""
    alone = [s for s in stages if getattr(s, "loads_alone", False)]
    await asyncio.gather(*(s.start() for s in stages if s not in alone))
    for stage in alone:
        await stage.start()
