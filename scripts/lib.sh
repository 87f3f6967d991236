# Shared by scripts/test and scripts/demo: install what is missing, start what is not running.
# Every function is idempotent: what is there is reused.

# Debian packages the tests and the demo need.
OUTPOST_PACKAGES=(docker.io mosquitto mosquitto-clients docker-registry busybox-static
  apache2-utils file tar ca-certificates iproute2 iptables curl python3 python3-venv
  help2man man-db haproxy chromium zookeeper)

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the packages that are not installed yet, running `apt-get update` once first.
ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

docker_ping() {
  curl -fsS --max-time 2 --unix-socket /var/run/docker.sock http://docker/_ping >/dev/null 2>&1
}

# Reuses a running dockerd, else starts Debian's and waits (bounded) until /_ping answers.
ensure_dockerd() {
  docker_ping && return 0
  log "starting dockerd (log: /var/log/outpost-dockerd.log)"
  as_root setsid nohup dockerd >/var/log/outpost-dockerd.log 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    docker_ping && return 0
    sleep 0.5
  done
  echo "dockerd did not answer /_ping within 60 s; see /var/log/outpost-dockerd.log" >&2
  tail -20 /var/log/outpost-dockerd.log >&2 || true
  return 1
}

# Installs a cargo subcommand from crates.io when it is missing.
ensure_cargo_tool() {
  local tool=$1 crate=${2:-$1}
  command -v "$tool" >/dev/null 2>&1 && return 0
  log "installing $crate (cargo install, a few minutes once)"
  cargo install --locked --quiet "$crate"
}

# The Marathon client the compatibility test drives, unchanged: marathon-python 0.13.0 from
# PyPI in a virtualenv under target/ (made once, reused).
CLIENT_VENV=target/client-venv
ensure_client_venv() {
  "$CLIENT_VENV/bin/python" -c "import marathon, kazoo, prometheus_client" >/dev/null 2>&1 && return 0
  log "installing marathon-python 0.13.0, kazoo 2.10.0 and prometheus-client 0.21.1 into $CLIENT_VENV"
  rm -rf "$CLIENT_VENV"
  python3 -m venv "$CLIENT_VENV"
  "$CLIENT_VENV/bin/pip" install --quiet --disable-pip-version-check marathon==0.13.0 kazoo==2.10.0 \
    prometheus-client==0.21.1
}

# The Debian root the real-systemd test boots with systemd-nspawn (tests/tests/nspawn.rs):
# debootstrapped once per machine (~75 s, 250 MB) and reused; each boot is a throw-away copy
# (`systemd-nspawn -x`), so the root stays clean. A root whose debootstrap did not finish has
# no marker and is made again.
NSPAWN_ROOT=${OUTPOST_NSPAWN_ROOT:-/var/lib/outpost-test/bookworm}
ensure_nspawn_root() {
  ensure_packages systemd-container debootstrap
  [ -e "$NSPAWN_ROOT/.outpost-complete" ] && return 0
  log "debootstrapping a Debian root for the systemd-nspawn test into $NSPAWN_ROOT (once, ~75 s)"
  local mirror
  mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  as_root rm -rf "$NSPAWN_ROOT"
  as_root mkdir -p "$(dirname "$NSPAWN_ROOT")"
  as_root debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm \
    "$NSPAWN_ROOT" "${mirror:-http://deb.debian.org/debian}" >/dev/null
  as_root touch "$NSPAWN_ROOT/.outpost-complete"
}
