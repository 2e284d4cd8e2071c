# shellcheck shell=bash
# Sourced by the ensure-*.sh scripts: run a command as root (directly, or through sudo), and
# install Debian packages. Without root and without sudo it stops with the command the user should
# run instead of an apt error.

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else
    echo "error: this step needs root, and sudo is not installed. As root, run:" >&2
    echo "    $*" >&2
    echo "then run make again (or install sudo and add $(id -un) to the sudo group)." >&2
    exit 1
  fi
}

apt_updated=0
# apt_install WHY PACKAGE...: install Debian packages, saying why first.
apt_install() {
  local why="$1"; shift
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "error: $why needs the Debian package(s) $*; installing them needs root and sudo is" >&2
    echo "not installed. As root, run:" >&2
    echo "    apt-get update && apt-get install -y --no-install-recommends $*" >&2
    echo "then run make again." >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $why needs $*, and this system has no apt-get (the scripts support Debian and" >&2
    echo "Ubuntu): install them with the system's package manager, then run make again." >&2
    exit 1
  fi
  echo "installing $* ($why)" >&2
  # The lock timeout lets two scripts run by `make -j2` install one after the other.
  local lock=(-o DPkg::Lock::Timeout=600)
  if [ "$apt_updated" -eq 0 ]; then as_root apt-get "${lock[@]}" update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get "${lock[@]}" install -y -qq --no-install-recommends "$@" >/dev/null
}
