#!/usr/bin/env bash
# `make ci-fresh`: run .ci/run as CI does, in a throwaway minimal Debian root that stands for a
# newcomer's fresh machine, to check the README's promise that `make test` sets everything up.
#
# - The root: debootstrap (minbase) of Debian 12 from Debian's packages, plus only what the README
#   asks a newcomer to have: git make python3 python3-venv python3-pip curl ca-certificates (and
#   sudo for the user). Nothing of this machine's Python, uv, Redis, PostgreSQL or pip set-up.
# - The code: a clone of the committed HEAD (uncommitted changes are not in it: commit first).
# - The user: a non-root user with passwordless sudo (CI_FRESH_USER=emp, the default), or root
#   (CI_FRESH_USER=root, as CI runs).
# - The network: a namespace of its own, with a veth pair to this machine and NAT out of it, so the
#   root reaches the package registries but its 127.0.0.1 is its own: this machine's PostgreSQL,
#   Redis and the like cannot answer for it (its packets to this machine's own addresses are
#   dropped too). Where this machine's HTTPS goes through a TLS-inspecting proxy, the root gets
#   that proxy's CA (what this machine's bundle has beyond Debian's) and the SSL_CERT_FILE-like
#   variables set here, as any machine on that network needs.
# - Its own PID, mount and UTS namespaces (hostname ci-fresh): every process it started ends with it, its mounts vanish,
#   and the root is deleted afterwards (CI_FRESH_KEEP=1 keeps it).
#
# Needs root (re-runs itself through sudo). Prints the time of each phase; the log of the last run
# is $CI_FRESH_DIR/last.log. Takes about 6 minutes on 2 idle cores (see README).
# The whole script is one block, read before it runs: editing it during a run cannot break the run.
{
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then exec sudo --preserve-env=CI_FRESH_SUITE,CI_FRESH_MIRROR,CI_FRESH_USER,CI_FRESH_DIR,CI_FRESH_KEEP,CI_FRESH_TIMEOUT,CI_FRESH_CMD "$0" "$@"; fi
  echo "error: make ci-fresh needs root (debootstrap, namespaces); run it as root or install sudo" >&2
  exit 1
fi
# shellcheck source=scripts/as-root.sh
. "$repo/scripts/as-root.sh"

suite="${CI_FRESH_SUITE:-bookworm}"
mirror="${CI_FRESH_MIRROR:-http://deb.debian.org/debian}"
user="${CI_FRESH_USER:-emp}"
base="${CI_FRESH_DIR:-/var/tmp/emp-ci-fresh}"
timeout_s="${CI_FRESH_TIMEOUT:-5400}"  # CI's own limit: 90 minutes
# What runs in the clone (CI's entry point; e.g. CI_FRESH_CMD='timeout -s INT 120 make dev').
cmd="${CI_FRESH_CMD:-bash .ci/run}"
work="$base/run.$$"
root="$work/root"
log="$base/last.log"
home=$([ "$user" = root ] && echo /root || echo "/home/$user")

# Names and a /30 of this run's own (the third octet from the PID, so two runs do not collide).
octet=$(( $$ % 250 + 1 ))
ns="empci$$"; veth_host="empci$$h"; veth_ns="empci$$n"
net="10.231.$octet.0/30"; host_ip="10.231.$octet.1"; ns_ip="10.231.$octet.2"

start=$(date +%s)
phase() { printf '[ci-fresh %5ss] %s\n' "$(( $(date +%s) - start ))" "$*" | tee -a "$log" >&2; }

old_forward="$(cat /proc/sys/net/ipv4/ip_forward)"
cleanup() {
  set +e
  iptables -t nat -D POSTROUTING -s "$net" ! -o "$veth_host" -j MASQUERADE 2>/dev/null
  iptables -D FORWARD -i "$veth_host" -j ACCEPT 2>/dev/null
  iptables -D FORWARD -o "$veth_host" -j ACCEPT 2>/dev/null
  iptables -D INPUT -i "$veth_host" -j DROP 2>/dev/null
  ip link del "$veth_host" 2>/dev/null
  ip netns del "$ns" 2>/dev/null
  echo "$old_forward" > /proc/sys/net/ipv4/ip_forward
  if [ "${CI_FRESH_KEEP:-0}" = 1 ]; then echo "kept the root: $root" >&2
  elif [ -d "$work" ]; then
    # Its mounts lived in the run's own mount namespace; refuse to delete through any left here.
    if findmnt -rn -o TARGET | grep -q "^$work/"; then echo "mounts left under $work: not deleting it" >&2
    else rm -rf --one-file-system "$work"; fi
  fi
}
trap cleanup EXIT

mkdir -p "$base"; : > "$log"
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
  phase "note: uncommitted changes in $repo are not tested (the root gets a clone of HEAD)"
fi
commit="$(git -C "$repo" rev-parse HEAD)"
phase "checking $(git -C "$repo" log -1 --format='%h %s' "$commit")"

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v iptables >/dev/null || missing+=(iptables)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then apt_install "make ci-fresh" "${missing[@]}"; fi

# --- the root --------------------------------------------------------------------------------------
phase "debootstrap $suite (minbase) into $root"
include=git,make,python3,python3-venv,python3-pip,curl,ca-certificates
[ "$user" = root ] || include="$include,sudo"
debootstrap --variant=minbase --include="$include" "$suite" "$root" "$mirror" >"$work.debootstrap.log" 2>&1 \
  || { tail -n 20 "$work.debootstrap.log" >&2; exit 1; }
cat "$work.debootstrap.log" >> "$log"; rm -f "$work.debootstrap.log"

cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb http://deb.debian.org/debian-security $suite-security main
EOF
# This machine's resolver, unless it is a local stub (not reachable from the namespace).
if grep -qE '^nameserver\s+127\.' /etc/resolv.conf && [ -f /run/systemd/resolve/resolv.conf ]; then
  cp /run/systemd/resolve/resolv.conf "$root/etc/resolv.conf"
else
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
fi
# The network's own certificate authorities: where this machine's HTTPS goes through a TLS-inspecting
# proxy, its trust store has that proxy's CA, which a Debian root lacks. Copy what this machine's
# bundle has beyond the root's, and pass on the variables that point tools at the bundle (run below).
python3 - "$root" <<'PY'
import re, sys
pem = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)
bundle = "/etc/ssl/certs/ca-certificates.crt"
mine = set(pem.findall(open(bundle).read()))
theirs = set(pem.findall(open(sys.argv[1] + bundle).read()))
for i, cert in enumerate(sorted(mine - theirs)):
    with open(f"{sys.argv[1]}/usr/local/share/ca-certificates/host-{i}.crt", "w") as f:
        f.write(cert + "\n")
PY
chroot "$root" update-ca-certificates >/dev/null 2>&1
tls_env=()
for v in SSL_CERT_FILE SSL_CERT_DIR REQUESTS_CA_BUNDLE PIP_CERT CURL_CA_BUNDLE GIT_SSL_CAINFO \
  NODE_EXTRA_CA_CERTS; do
  if [ -n "${!v:-}" ] && [ -e "$root${!v}" ]; then tls_env+=("$v=${!v}"); fi
done
printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\tci-fresh\n' \
  > "$root/etc/hosts"
echo ci-fresh > "$root/etc/hostname"
if [ "$user" != root ]; then
  chroot "$root" useradd --create-home --shell /bin/bash "$user"
  echo "$user ALL=(ALL) NOPASSWD:ALL" > "$root/etc/sudoers.d/$user"
  chmod 0440 "$root/etc/sudoers.d/$user"
fi
git clone --quiet --no-hardlinks "$repo" "$root$home/emp"
git -C "$root$home/emp" checkout --quiet --detach "$commit"
chroot "$root" chown -R "$user:" "$home/emp"

# --- the network -----------------------------------------------------------------------------------
phase "network namespace $ns ($ns_ip, NAT through $host_ip)"
uplink="$(ip route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") print $(i + 1); exit}')"
mtu="$(cat "/sys/class/net/$uplink/mtu" 2>/dev/null || echo 1500)"
ip netns add "$ns"
ip link add "$veth_host" mtu "$mtu" type veth peer name "$veth_ns" mtu "$mtu"
ip link set "$veth_ns" netns "$ns"
ip addr add "$host_ip/30" dev "$veth_host"
ip link set "$veth_host" up
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$ns_ip/30" dev "$veth_ns"
ip -n "$ns" link set "$veth_ns" up
ip -n "$ns" route add default via "$host_ip"
echo 1 > /proc/sys/net/ipv4/ip_forward
iptables -t nat -A POSTROUTING -s "$net" ! -o "$veth_host" -j MASQUERADE
iptables -I FORWARD -i "$veth_host" -j ACCEPT
iptables -I FORWARD -o "$veth_host" -j ACCEPT
iptables -I INPUT -i "$veth_host" -j DROP  # nothing on this machine answers the root

# --- the run ---------------------------------------------------------------------------------------
phase "${cmd%%$'\n'*} as $user (CI=true, no stdin), timeout ${timeout_s}s"
run_start=$(date +%s)
set +e
# shellcheck disable=SC2016  # expanded by the inner shell
timeout --kill-after=30 "$timeout_s" ip netns exec "$ns" \
  unshare --mount --uts --pid --fork --propagation private env ROOT="$root" RUN_USER="$user" \
  RUN_HOME="$home" TLS_ENV="${tls_env[*]}" RUN_CMD="$cmd" bash -euc '
    hostname ci-fresh
    mount -t proc proc "$ROOT/proc"
    mount -t sysfs sysfs "$ROOT/sys"
    mount --rbind /dev "$ROOT/dev"
    mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"
    mount -t tmpfs -o mode=1777 tmpfs "$ROOT/tmp"
    exec chroot "$ROOT" /usr/sbin/runuser -u "$RUN_USER" -- env -i HOME="$RUN_HOME" \
      USER="$RUN_USER" LOGNAME="$RUN_USER" LANG=C.UTF-8 TERM=dumb CI=true $TLS_ENV \
      PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      RUN_CMD="$RUN_CMD" bash -c "cd ~/emp && eval \"\$RUN_CMD\""
  ' </dev/null 2>&1 | tee -a "$log"
rc=${PIPESTATUS[0]}
set -e
run_s=$(( $(date +%s) - run_start ))

summary="$(grep -E '^=+ .*(passed|failed|error).* in [0-9.]+s' "$log" | sed -E 's/^=+ (.*) =+$/\1/' || true)"
phase "${cmd%%$'\n'*} exited $rc after ${run_s}s; pytest runs:"
printf '%s\n' "${summary:-  (none)}" | sed 's/^/    /' | tee -a "$log" >&2
phase "total $(( $(date +%s) - start ))s; log: $log"
exit "$rc"
}
