#!/usr/bin/env bash
# Install prometheus and promtool from Debian's `prometheus` package (2.42 on bookworm) when missing.
# Idempotent: does nothing when both are on PATH. Used by `make prometheus-install` / `make ops-tools`.
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1; then
  exit 0
fi

fail() { echo "prometheus-install: $* (install Debian's 'prometheus' package by hand: apt-get install prometheus)" >&2; exit 1; }

command -v apt-get >/dev/null 2>&1 || fail "apt-get not found"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || fail "not root and no sudo"
  sudo="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
{
  $sudo apt-get update -qq &&
    $sudo apt-get install -y -qq --no-install-recommends prometheus
} >"$log" 2>&1 || { tail -n 5 "$log" >&2; fail "apt-get install prometheus failed"; }

# The package enables a systemd service; we only want the binaries, never a server bound to :9090.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
command -v promtool >/dev/null 2>&1 || fail "promtool still not on PATH after install"
echo "prometheus-install: $(promtool --version 2>&1 | head -n 1)"
