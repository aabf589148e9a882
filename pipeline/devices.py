"""Audio devices through PyAudio (PortAudio): listing, choosing by index or
name, and finding a rate each device supports."""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterator, Optional, Union

from .errors import CascadeError, MissingDependencyError

FILE_MODE_HINT = ("list the devices with `python -m pipeline devices`, or run without a "
                  "microphone in file mode: python -m pipeline run --input conversation.wav "
                  "--output-dir out/")


class AudioDeviceError(CascadeError):
    """No usable audio device, or it was lost mid-session; the message says how to
    list devices and how to use file mode instead."""


def no_sound_server(kind: str) -> Optional[str]:
    """Why no ``kind`` ("input" or "output") device works when the cause is the sound
    server that ALSA's default device goes through: PulseAudio is installed but not
    running, or it runs with no sound card. None otherwise."""
    what = "sink" if kind == "output" else "source"
    if shutil.which("pactl") is None:
        return None
    try:
        listed = subprocess.run(["pactl", "list", "short", f"{what}s"], capture_output=True,
                                text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return None
    if listed.returncode != 0:
        why = "PulseAudio is installed but not running (start it with `pulseaudio --start`)"
    elif not listed.stdout.strip():
        why = f"PulseAudio runs but has no sound card (no {what})"
    else:
        return None
    return f"no audio server or sound card: {why}, or connect a sound card; {FILE_MODE_HINT}"


def device_error(message: str, kind: str) -> AudioDeviceError:
    """A device cannot be used: say so, or say that there is no sound server or card."""
    return AudioDeviceError(no_sound_server(kind) or f"{message}; {FILE_MODE_HINT}")


def device_lost(what: str, name: str) -> AudioDeviceError:
    """PortAudio ended a stream mid-session."""
    return AudioDeviceError(f"audio device lost: the {what} ({name!r}) stopped: it was "
                            "unplugged, or the sound server stopped")


def buffer_time(now: float, time_info: dict, key: str, fallback: float) -> float:
    """Session time of the first sample of a PortAudio callback's buffer: ``now`` plus
    how far its ``key`` time ("input_buffer_adc_time" or "output_buffer_dac_time") is
    from the stream's current time. That follows the device's buffering from one
    callback to the next (a late callback finds its buffer emptier), where ``now``
    jitters; ``fallback`` where the host API gives no such time."""
    at = time_info.get(key, 0.0)
    return now + at - time_info["current_time"] if at else fallback


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    max_input: int
    max_output: int
    default_rate: int


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """PortAudio probes ALSA, JACK and OSS at start-up and prints their complaints on
    file descriptor 2; hide them while it does."""
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def open_pyaudio():
    try:
        import pyaudio
    except ImportError as err:
        raise MissingDependencyError("live audio needs PyAudio: apt-get install portaudio19-dev "
                                     "&& pip install pyaudio==0.2.14 (make run does both)") from err
    with _quiet_stderr():
        return pyaudio.PyAudio()


def list_devices(pa) -> list[Device]:
    out = []
    for i in range(pa.get_device_count()):
        d = pa.get_device_info_by_index(i)
        out.append(Device(i, d["name"], int(d["maxInputChannels"]), int(d["maxOutputChannels"]),
                          int(d["defaultSampleRate"])))
    return out


def find_device(pa, spec: Optional[Union[int, str]], kind: str) -> Device:
    """``kind`` is "input" or "output"; ``spec`` an index, part of a name, or None for
    the system default."""
    devices = [d for d in list_devices(pa) if (d.max_input if kind == "input" else d.max_output)]
    key = f"audio.{kind}_device"
    if not devices:
        what = "microphone (input)" if kind == "input" else "speaker (output)"
        raise device_error(f"no {what} device found", kind)
    if spec is None:
        try:
            info = (pa.get_default_input_device_info() if kind == "input"
                    else pa.get_default_output_device_info())
            return next(d for d in devices if d.index == info["index"])
        except (IOError, OSError, StopIteration):
            return devices[0]
    if isinstance(spec, int):
        for d in devices:
            if d.index == spec:
                return d
        raise AudioDeviceError(f"{key}: no {kind} device with index {spec}; {FILE_MODE_HINT}")
    matches = [d for d in devices if spec.lower() in d.name.lower()]
    if not matches:
        raise AudioDeviceError(f"{key}: no {kind} device named like {spec!r}; {FILE_MODE_HINT}")
    return matches[0]


def supported_rate(pa, device: Device, kind: str, preferred: list[int]) -> int:
    import pyaudio

    kwargs = ({"input_device": device.index, "input_channels": 1,
               "input_format": pyaudio.paFloat32} if kind == "input" else
              {"output_device": device.index, "output_channels": 1,
               "output_format": pyaudio.paFloat32})
    for rate in [*preferred, device.default_rate, 48000, 44100, 16000]:
        try:
            with _quiet_stderr():  # ALSA explains a refusal on file descriptor 2
                if pa.is_format_supported(rate, **kwargs):
                    return rate
        except ValueError:
            continue
    raise device_error(f"audio.{kind}_device: {device.name!r} supports none of the usual "
                       f"rates for mono float32 audio", kind)


def describe(devices: list[Device]) -> str:
    lines = ["index  in  out  rate   name"]
    for d in devices:
        lines.append(f"{d.index:5d} {d.max_input:3d} {d.max_output:4d} {d.default_rate:6d}  {d.name}")
    return "\n".join(lines)
