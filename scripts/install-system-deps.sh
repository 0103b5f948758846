#!/usr/bin/env bash
# Installs the Debian packages the test suite's real parts need (PulseAudio as a microphone,
# PortAudio for sounddevice, socat for serial PTY pairs, Mosquitto as the plant's MQTT broker; Chromium and a CJK font for the station page's browser tests (Playwright) and Chinese kiosks; libGL and GLib for the desktop OpenCV build that
# ultralytics in the yolo extra installs over the headless one; strace to watch the service sync before it answers). Skips what is already there; needs root (or sudo) only to install.
set -euo pipefail
packages=(libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins alsa-utils socat libgl1 libglib2.0-0 mosquitto
          mosquitto-clients chromium fonts-wqy-microhei strace)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
