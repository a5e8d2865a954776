#!/usr/bin/env bash
# Installs the system packages the build needs on Debian: cmake and nasm (libjpeg-turbo
# via the turbojpeg crate, rav1e's assembly; cmake also builds jpegli), plus pkg-config and
# a C and C++ toolchain (jpegli and its highway library are C++).
# Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail
need=()
for tool in cmake nasm pkg-config cc c++; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
pkgs=()
for tool in "${need[@]}"; do
  case "$tool" in
    cc | c++) pkgs+=(build-essential) ;;
    *) pkgs+=("$tool") ;;
  esac
done
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${pkgs[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
