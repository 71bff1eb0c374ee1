#!/usr/bin/env bash
# Debian packages loopdrive needs: EGL/Mesa for headless pyrender, and ffmpeg on PATH (nerfstudio's
# ns-render calls `ffmpeg` by name; loopdrive's own videos use imageio-ffmpeg's bundled binary).
# Idempotent: does nothing when every package is present.
set -euo pipefail
PKGS=(libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libgles2 libglu1-mesa ffmpeg)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "system packages: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
