"""A real input device without a sound card: a private PulseAudio with a null sink.

Whatever is played into the sink (``play``) is what its monitor source, the "microphone",
hears; sounddevice opens it as the ``pulse`` device. Used by tests, the benchmark's capture
soak and demos. The daemon runs with a private ``XDG_RUNTIME_DIR`` and is stopped by its pid.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

REQUIRED_TOOLS = ("pulseaudio", "pactl", "pacat", "paplay")
SINK = "mic_sink"


def missing_tools() -> list[str]:
    """The PulseAudio programs that are not installed (empty when all are)."""
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


class VirtualMicrophone:
    """Start on enter, stop on exit. Sets ``XDG_RUNTIME_DIR`` in this process while running."""

    def __init__(self, sample_rate: int = 16000, channels: int = 1, start_timeout_s: float = 10.0) -> None:
        self.sample_rate = sample_rate
        self.channels = channels
        self.start_timeout_s = start_timeout_s
        self.runtime_dir: Path | None = None
        self._daemon: subprocess.Popen[bytes] | None = None
        self._feeder: subprocess.Popen[bytes] | None = None
        self._previous_runtime_dir: str | None = None

    @property
    def env(self) -> dict[str, str]:
        assert self.runtime_dir is not None, "the virtual microphone is not running"
        return {**os.environ, "XDG_RUNTIME_DIR": str(self.runtime_dir)}

    def start(self) -> None:
        missing = missing_tools()
        if missing:
            raise RuntimeError(f"PulseAudio tools not installed: {', '.join(missing)} (apt: pulseaudio-utils)")
        self.runtime_dir = Path(tempfile.mkdtemp(prefix="edge-inspect-pulse-"))
        self.runtime_dir.chmod(0o700)
        sink = f"module-null-sink sink_name={SINK} rate={self.sample_rate} channels={self.channels}"
        self._daemon = subprocess.Popen(
            ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disallow-exit",
             "--load=module-native-protocol-unix", f"--load={sink}", "--load=module-always-sink"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        socket = self.runtime_dir / "pulse" / "native"
        deadline = time.monotonic() + self.start_timeout_s
        while not socket.exists():
            if self._daemon.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("PulseAudio did not start (no socket); run it by hand to see why")
            time.sleep(0.05)
        subprocess.run(["pactl", "set-default-source", f"{SINK}.monitor"], env=self.env, check=True, timeout=10)
        # keep the sink busy: an idle null sink makes the first capture stall for up to 2 s
        self._feeder = subprocess.Popen(
            ["pacat", "--playback", "--raw", "--format=s16le", f"--rate={self.sample_rate}",
             f"--channels={self.channels}", f"--device={SINK}", "/dev/zero"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._previous_runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
        os.environ["XDG_RUNTIME_DIR"] = str(self.runtime_dir)
        _refresh_portaudio()

    def play(self, wav: Path, wait: bool = True) -> subprocess.Popen[bytes]:
        """Play a WAV file into the microphone from another process."""
        process = subprocess.Popen(["paplay", f"--device={SINK}", str(wav)], env=self.env)
        if wait:
            process.wait(timeout=600)
        return process

    def freeze(self) -> None:
        """Stop the sound server without ending it (SIGSTOP): a hung server, alive but not answering."""
        assert self._daemon is not None, "the virtual microphone is not running"
        self._daemon.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """Let a frozen sound server run on (SIGCONT)."""
        assert self._daemon is not None, "the virtual microphone is not running"
        self._daemon.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._daemon is not None and self._daemon.poll() is None:
            self._daemon.send_signal(signal.SIGCONT)  # a frozen server cannot act on SIGTERM
        for process in (self._feeder, self._daemon):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
        self._feeder = self._daemon = None
        if self._previous_runtime_dir is None:
            os.environ.pop("XDG_RUNTIME_DIR", None)
        else:
            os.environ["XDG_RUNTIME_DIR"] = self._previous_runtime_dir
        if self.runtime_dir is not None:
            shutil.rmtree(self.runtime_dir, ignore_errors=True)
            self.runtime_dir = None

    def __enter__(self) -> VirtualMicrophone:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _refresh_portaudio() -> None:
    """Make PortAudio enumerate devices again if sounddevice was imported before PulseAudio ran."""
    import sys

    module = sys.modules.get("sounddevice")
    if module is not None and hasattr(module, "_terminate"):
        module._terminate()
        module._initialize()
