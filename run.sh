#!/usr/bin/env bash
# todo-server's one entry point on a development machine or in CI.
#
#   ./run.sh                  serve the API (same as ./run.sh serve)
#   ./run.sh setup            install and prepare everything serve needs, then stop
#   ./run.sh test [args]      run the whole test suite (args go to pytest)
#   ./run.sh migrate [status] apply pending migrations, or list them
#   ./run.sh doctor [--json]  check the configuration against the database (exit 0 ok, 1 warn, 2 fail)
#   ./run.sh image [--tag NAME] [--save FILE]  build the container image (podman)
#   ./run.sh bench [--smoke]  run the benchmark harness (./run.sh bench --help)
#   ./run.sh vendor-docs      refresh the pinned Swagger UI and ReDoc assets (needs npm)
#
# Installs what it needs: a virtualenv in .venv (re-installed when pyproject.toml
# or constraints.txt changes) and, when missing, Debian's PostgreSQL server package. With no
# DATABASE_URL it runs a private PostgreSQL whose data lives in .data/postgres,
# reachable only through a Unix socket, and stops it again on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DATA="$ROOT/.data"
VENV="$ROOT/.venv"
cd "$ROOT"

say() { printf 'run.sh: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# --- .env: plain KEY=VALUE lines; variables already set win -----------------
load_dotenv() {
  [ -f "$ROOT/.env" ] || return 0
  local line key value
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%$'\r'}"
    case "$line" in '' | '#'*) continue ;; esac
    key="${line%%=*}"
    value="${line#*=}"
    key="${key#export }"
    key="${key//[[:space:]]/}"
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die ".env: not a KEY=VALUE line: $line"
    if [ -z "${!key+x}" ]; then
      export "$key=$value"
    fi
  done <"$ROOT/.env"
}

# --- Set-up lock: two first runs at once must not build one .venv or cluster twice
# The lock is file descriptor 9 on .data/setup.lock, held from the first set-up
# step until the command proper starts; long-lived children never inherit it.
take_setup_lock() {
  mkdir -p "$DATA"
  exec 9>"$DATA/setup.lock"
  if ! flock -n 9; then
    say "waiting for another ./run.sh in this folder to finish setting up"
    flock 9
  fi
}

release_setup_lock() {
  exec 9>&-
}

# --- Python: a virtualenv with the project installed ------------------------
apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
    die "please install: $* (apt-get install $*), then run again"
  say "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "$@" >/dev/null
}

ensure_venv() {
  local extra=$1 want have=""
  command -v python3 >/dev/null || apt_install python3 python3-venv
  want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1) $extra"
  [ -f "$VENV/.installed" ] && have=$(cat "$VENV/.installed")
  # A test install (dev extra) also serves; a serve install lacks pytest.
  if [ "$have" = "$want" ] || { [ "$extra" = "" ] && [ "$have" = "${want}dev" ]; }; then
    return 0
  fi
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" 2>/dev/null || { apt_install python3-venv && python3 -m venv "$VENV"; }
  fi
  say "installing the project into .venv"
  local target="."
  [ -n "$extra" ] && target=".[$extra]"
  # constraints.txt pins every version, so each machine and CI test the same packages.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -c constraints.txt \
    -e "$target"
  echo "$want" >"$VENV/.installed"
}

# --- PostgreSQL: found, created, started and stopped by devtools (Python) ------
# The venv exists before any of these run; devtools is this checkout's package.
devtools() { "$VENV/bin/python" -m devtools "$@"; }

ensure_postgres_installed() {
  devtools pg-bindir >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt_install postgresql
    devtools pg-bindir >/dev/null 2>&1 && return 0
  fi
  die "PostgreSQL server binaries not found. Install PostgreSQL (Debian: apt-get install postgresql) or set DATABASE_URL."
}

PG_STARTED_HERE=""
stop_local_postgres() {
  if [ -n "$PG_STARTED_HERE" ]; then
    devtools local-postgres stop || true
    PG_STARTED_HERE=""
  fi
}

# The private cluster in .data/postgres (Unix socket only), as the README's Quick start says.
start_local_postgres() {
  ensure_postgres_installed
  local started out
  out=$(devtools local-postgres start 9>&-) || exit 1
  { read -r started && read -r DATABASE_URL && read -r MIGRATION_DATABASE_URL; } <<<"$out"
  if [ "$started" = started ]; then
    PG_STARTED_HERE=1
    trap stop_local_postgres EXIT
  fi
  export DATABASE_URL MIGRATION_DATABASE_URL
}

ensure_database() {
  if [ -z "${DATABASE_URL:-}" ]; then
    start_local_postgres
  fi
}

ensure_secret() {
  [ -n "${BETTER_AUTH_SECRET:-}" ] && return 0
  local file="$DATA/secret"
  mkdir -p "$DATA"
  if [ ! -s "$file" ]; then
    (umask 077 && "$VENV/bin/python" -c \
      'import secrets; print("generated-local-only-" + secrets.token_hex(32))' >"$file")
    say "generated a local BETTER_AUTH_SECRET in $file"
  fi
  BETTER_AUTH_SECRET=$(cat "$file")
  export BETTER_AUTH_SECRET
}

# --- The container image (docs/deploy.md: Container image) ------------------------
ensure_podman() {
  local missing=""
  for tool in podman runc mmdebstrap; do command -v "$tool" >/dev/null || missing=1; done
  [ -z "$missing" ] && return 0
  apt_install --no-install-recommends podman runc crun netavark aardvark-dns iptables \
    slirp4netns uidmap fuse-overlayfs catatonit mmdebstrap
}

build_image() {
  local tag="localhost/todo-server:latest" save=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --tag) tag=${2:?--tag needs a name}; shift 2 ;;
      --save) save=${2:?--save needs a file name}; shift 2 ;;
      *) die "image: unknown option '$1'; use: ./run.sh image [--tag NAME] [--save FILE]" ;;
    esac
  done
  export CONTAINERS_CONF="$ROOT/deploy/containers.conf"
  if [ -z "$(podman images -q localhost/debian:bookworm-minbase 2>/dev/null)" ]; then
    say "building the base image from Debian's mirrors (once)"
    sh "$ROOT/deploy/make-base.sh"
  fi
  # Wheels are built here: pip inside a build cannot verify TLS on our machines.
  # All of build/ goes first: setuptools would copy what it left in build/lib
  # (modules since moved or deleted) into the new wheel.
  rm -rf "$ROOT/build"
  "$VENV/bin/python" -m pip wheel -q --disable-pip-version-check -w "$ROOT/build/wheels" "$ROOT"
  podman build --quiet --format docker --pull=never -t "$tag" "$ROOT" >/dev/null
  say "built $tag ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{printf "%.0f MB", $1/1e6}'))"
  if [ -n "$save" ]; then
    podman save --format docker-archive -o "$save" "$tag"
    say "saved $tag to $save; load it with: podman load -i $save (or docker load -i $save)"
  fi
}

# Run a long-lived child so that Ctrl-C and SIGTERM reach it and the cleanup trap still runs.
run_child() {
  "$@" &
  local child=$! status=0
  trap 'kill -TERM "$child" 2>/dev/null || true' INT TERM
  wait "$child" || status=$?
  # wait returns early when a trapped signal arrives; wait for the child to finish.
  while kill -0 "$child" 2>/dev/null; do wait "$child" || status=$?; done
  return "$status"
}

# Pinned copies of the docs pages' assets, from their official npm packages.
SWAGGER_UI_VERSION=5.35.0
REDOC_VERSION=2.5.4
vendor_docs() {
  command -v npm >/dev/null || die "npm is needed to refresh the docs assets"
  local work target="$ROOT/todo_server/static/vendor"
  work=$(mktemp -d)
  (cd "$work" && npm pack --silent "swagger-ui-dist@$SWAGGER_UI_VERSION" "redoc@$REDOC_VERSION" >/dev/null)
  mkdir -p "$work/swagger" "$work/redoc" "$target/swagger-ui" "$target/redoc"
  tar xzf "$work/swagger-ui-dist-$SWAGGER_UI_VERSION.tgz" -C "$work/swagger" --strip-components=1
  tar xzf "$work/redoc-$REDOC_VERSION.tgz" -C "$work/redoc" --strip-components=1
  cp "$work/swagger/"{swagger-ui-bundle.js,swagger-ui.css,LICENSE,NOTICE} "$target/swagger-ui/"
  cp "$work/redoc/bundles/redoc.standalone.js" "$work/redoc/LICENSE" "$target/redoc/"
  printf 'swagger-ui-dist %s\nredoc %s\n' "$SWAGGER_UI_VERSION" "$REDOC_VERSION" >"$target/VERSIONS"
  rm -rf "$work"
  say "vendored swagger-ui-dist $SWAGGER_UI_VERSION and redoc $REDOC_VERSION into $target"
}

# What serve needs: .venv, the private PostgreSQL (without DATABASE_URL), the secret,
# migrations; under the set-up lock, which the caller releases.
prepare_to_serve() {
  load_dotenv
  take_setup_lock
  ensure_venv ""
  ensure_database
  ensure_secret
  "$VENV/bin/todo-server" migrate
}

command=${1:-serve}
[ $# -gt 0 ] && shift

case "$command" in
  serve)
    prepare_to_serve
    release_setup_lock
    run_child "$VENV/bin/todo-server" serve
    ;;
  setup)
    # Everything `serve` prepares, then stop; the private PostgreSQL is stopped again on exit.
    prepare_to_serve
    ;;
  migrate)
    load_dotenv
    take_setup_lock
    ensure_venv ""
    ensure_database
    release_setup_lock
    "$VENV/bin/todo-server" migrate "$@"
    ;;
  doctor)
    # As migrate prepares; the secret too, so a local deployment is checked as serve runs it.
    load_dotenv
    take_setup_lock
    ensure_venv ""
    ensure_database
    ensure_secret
    release_setup_lock
    "$VENV/bin/todo-server" doctor "$@"
    ;;
  test)
    take_setup_lock
    ensure_venv dev
    # Even with TEST_DATABASE_URL: the recovery, topology and bench tests start their own clusters.
    ensure_postgres_installed
    # The docs pages are checked in a real browser; the benchmark smoke test needs wrk;
    # the service and migrations are tested behind a real PgBouncer.
    command -v chromium >/dev/null || apt_install chromium
    command -v wrk >/dev/null || apt_install wrk
    [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || apt_install pgbouncer
    # Opaque session tokens are tested against a real Better Auth (npm; tests/support/better_auth_server/).
    command -v npm >/dev/null || apt_install nodejs npm
    # The container image is built and run by the suite.
    ensure_podman
    release_setup_lock
    "$VENV/bin/python" -m pytest "$@"
    ;;
  bench)
    take_setup_lock
    ensure_venv dev
    ensure_postgres_installed
    command -v wrk >/dev/null || apt_install wrk
    release_setup_lock
    "$VENV/bin/python" -m bench.run "$@"
    ;;
  image)
    take_setup_lock
    ensure_venv ""
    ensure_podman
    release_setup_lock
    build_image "$@"
    ;;
  vendor-docs)
    vendor_docs
    ;;
  *)
    die "unknown command '$command'; use: serve, setup, test, migrate, doctor, image, bench, vendor-docs"
    ;;
esac
