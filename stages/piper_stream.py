"""A Piper voice decoded in pieces: a chunk's first audio before its whole synthesis.

A Piper voice is a VITS model in one ONNX graph, in two halves:
- the front (text encoder, duration predictor, alignment, and both random draws):
  over the whole text, it gives the latent frames ``z_p`` and their mask;
- the back (the reverse flow, then the HiFi-GAN decoder): convolutions over those
  frames, each output sample depending on a few frames either side only.
The graph is cut between the two (at its first ``/flow/`` node, as Piper's export
names them) into two ONNX Runtime sessions. The back then runs on a stretch of
frames plus ``context`` frames on each side, and its output there is the whole
decode's: on en_US-joe-medium 20 frames (232 ms) each side give it to within 3e-5,
16 to 2e-4 (tests/test_piper_stream.py). The first piece of a chunk is decoded
first (``first`` frames), the rest after it has been handed on: the first audio of
a 4-word chunk took ~40 against ~65 ms here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import MissingDependencyError, ModelNotFoundError

BACK_PREFIX = "/flow/"  # the first node of the back half, as Piper's VITS export names it


@dataclass(frozen=True)
class Halves:
    front: bytes  # serialized ONNX models
    back: bytes
    links: tuple[str, ...]  # the tensors the front hands to the back


def split_voice(path: Path, key: str = "tts.voice") -> Halves:
    """The front and back halves of the Piper voice at ``path``; a graph that has no
    such cut is a ModelNotFoundError naming ``key``."""
    try:
        import onnx
        import onnx.utils
    except ImportError as err:
        raise MissingDependencyError("tts.stream_decode needs: pip install onnx==1.23.2") from err
    try:
        model = onnx.load(str(path))
    except Exception as err:  # protobuf's DecodeError and the like
        raise ModelNotFoundError(f"{key}: {path} could not be read as an ONNX graph ({err}): "
                                 "is it a Piper .onnx voice?") from None
    graph = model.graph
    at = next((i for i, node in enumerate(graph.node) if node.name.startswith(BACK_PREFIX)), None)
    if at is None:
        raise ModelNotFoundError(f"{key}: {path} has no {BACK_PREFIX!r} nodes: not a Piper VITS "
                                 "export, so it cannot be decoded in pieces; set "
                                 "tts.stream_decode: false")
    made = {out for node in graph.node[:at] for out in node.output}
    links: list[str] = []
    for node in graph.node[at:]:
        for name in node.input:
            if name in made and name not in links:
                links.append(name)
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    extractor = onnx.utils.Extractor(model)
    try:
        front = extractor.extract_model(inputs, links)
        back = extractor.extract_model(links + [i for i in inputs if _reads(graph, at, i)],
                                       outputs)
    except Exception as err:  # onnx raises plain exceptions for a graph it cannot cut
        raise ModelNotFoundError(f"{key}: {path} could not be cut in two at its "
                                 f"{BACK_PREFIX!r} nodes ({err}); set tts.stream_decode: "
                                 "false") from None
    return Halves(front.SerializeToString(), back.SerializeToString(), tuple(links))


def _reads(graph: Any, at: int, name: str) -> bool:
    """Does a node of the back half read graph input ``name`` (a speaker id)?"""
    return any(name in node.input for node in graph.node[at:])


class PieceDecoder:
    """The two halves as ONNX Runtime sessions (``session(model_bytes)`` makes one)."""

    def __init__(self, halves: Halves, session, context: int):
        self.front = session(halves.front)
        self.back = session(halves.back)
        self.links = halves.links
        self.back_inputs = [i.name for i in self.back.get_inputs()]
        self.context = context

    def frames(self, feed: dict[str, np.ndarray]) -> "Latent":
        """The front half on the voice's inputs: the latent frames of the whole text."""
        out = self.front.run(list(self.links), feed)
        links = dict(zip(self.links, out))
        extra = {name: feed[name] for name in self.back_inputs if name in feed}
        return Latent(links, extra, _frame_count(links))

    def decode(self, latent: "Latent", lo: int, hi: int) -> np.ndarray:
        """Audio of frames [lo, hi), decoded with ``context`` frames either side."""
        a, b = max(0, lo - self.context), min(latent.n, hi + self.context)
        feed = {name: (np.ascontiguousarray(x[..., a:b]) if _framed(x, latent.n) else x)
                for name, x in latent.links.items()}
        feed.update(latent.extra)
        audio = self.back.run(None, feed)[0].reshape(-1)
        hop = len(audio) // (b - a)
        return audio[(lo - a) * hop:(hi - a) * hop]


@dataclass(frozen=True)
class Latent:
    links: dict[str, np.ndarray]  # what the front hands to the back
    extra: dict[str, np.ndarray]  # graph inputs the back reads too (a speaker id)
    n: int  # frames


def _frame_count(links: dict[str, np.ndarray]) -> int:
    """Frames of the latent: the last axis of the 3-D links (z_p [1, C, T], mask [1, 1, T];
    a speaker embedding [1, C, 1] is not framed)."""
    counts = [x.shape[-1] for x in links.values() if x.ndim == 3]
    if not counts:
        raise ValueError("the voice's front half hands on no frames: "
                         f"{ {k: v.shape for k, v in links.items()} }")
    return max(counts)


def _framed(x: np.ndarray, n: int) -> bool:
    return x.ndim == 3 and x.shape[-1] == n
