"""A pair of connected pseudo-terminals made by socat, for the simulator, tests and benchmarks."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from types import TracebackType

_PTY_LINE = re.compile(r"PTY is (\S+)")


class SocatMissing(RuntimeError):
    """socat is not installed (Debian/Ubuntu: apt-get install socat)."""


class PtyPair:
    """`with PtyPair() as (appliance_end, plc_end): ...` — bytes written to one end come out of the other."""

    def __init__(self, timeout_s: float = 5.0) -> None:
        self.timeout_s = timeout_s
        self._process: subprocess.Popen[str] | None = None
        self.paths: tuple[str, str] = ("", "")

    def start(self) -> tuple[str, str]:
        socat = shutil.which("socat")
        if socat is None:
            raise SocatMissing("socat not found on PATH; install it (apt-get install socat) to use a PTY pair")
        process = subprocess.Popen(
            [socat, "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._process = process
        assert process.stderr is not None
        paths: list[str] = []
        deadline = time.monotonic() + self.timeout_s
        while len(paths) < 2 and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            match = _PTY_LINE.search(line)
            if match:
                paths.append(match.group(1))
        if len(paths) < 2:
            self.stop()
            raise RuntimeError(f"socat did not report two PTYs within {self.timeout_s} s")
        self.paths = (paths[0], paths[1])
        return self.paths

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(3)
        if process.stderr is not None:
            process.stderr.close()

    def __enter__(self) -> tuple[str, str]:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
