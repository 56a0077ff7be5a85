# shellcheck shell=bash
# `scripts/cluster.sh test`: the mission, asserted on the running cluster. Each assertion prints
# what it measured (check, in steps.sh). The clients run on this machine and reach the Gateway
# through kind's port mapping (127.0.0.1:8443), so every request crosses TLS, NGINX Gateway
# Fabric and the mesh exactly as a user's would.

OUTSIDER_NAMESPACE=meridian-e2e-outsider
# The outsiders' and the probe's client: curl's own image (runs as a non-root user).
CURL_IMAGE=docker.io/curlimages/curl:8.11.1
# The background reads during a canary stop at this bound at the latest (the steps and the
# analysis take ~4 minutes, k8s/overlays/e2e).
CANARY_SECONDS=${CANARY_SECONDS:-900}
# hpa-ramp at dev size (load-tests/README.md; capacity.py --check derives them from the dev
# overlay): the base and peak rates that take items past 70 % of its 50m CPU request and let it
# scale back within the run, and the VU cap.
HPA_RAMP_RATE=84
HPA_RAMP_PEAK=673
HPA_RAMP_MAX_VUS=100
# Long enough for both canaries to finish (k8s/overlays/e2e shortens their steps).
DRAIN_SECONDS=${DRAIN_SECONDS:-420s}
# The dev overlay's throwaway write key (k8s/overlays/dev/kustomization.yaml).
API_KEY=$(sed -n 's/^ *- dummy-api-key=//p' k8s/overlays/dev/kustomization.yaml | head -n 1)

# One request through the Gateway. Usage: gw METHOD PATH [curl args...]; prints the status,
# leaves the body in $STATE_DIR/body and the headers in $STATE_DIR/headers.
gw() {
  local method=$1 path=$2
  shift 2
  local args=(curl -sS --max-time 10 --resolve "$GATEWAY_HOST:$GATEWAY_PORT:127.0.0.1" --cacert "$CA_FILE"
    -X "$method" -o "$STATE_DIR/body" -D "$STATE_DIR/headers" -w '%{http_code}' "$@"
    "https://$GATEWAY_HOST:$GATEWAY_PORT$path")
  show "${args[@]}" >&2
  [ "$PLAN" = 1 ] && return 0
  "${args[@]}" || echo "curl-failed"
}

# A field of the last body: json_field 'd["local"]["source"]'
json_field() {
  [ "$PLAN" = 1 ] && return 0
  python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$STATE_DIR/body" "$1"
}

create_item() {
  gw POST /v1/items -H "X-API-Key: $API_KEY" -H 'Content-Type: application/json' -d "{\"name\":\"$1\",\"tags\":[\"e2e\"]}"
}

assert_gateway_crud() {
  step "Through the Gateway over TLS: item CRUD, a ?tz= read across the hop, /docs, /openapi.json"
  local status id source
  status=$(create_item e2e-crud)
  check "create answers 201" "$status" [ "$status" = 201 ]
  id=$(json_field 'd["id"]')
  status=$(gw GET "/v1/items/$id")
  check "read answers 200" "$status" [ "$status" = 200 ]
  status=$(gw PATCH "/v1/items/$id" -H "X-API-Key: $API_KEY" -H 'Content-Type: application/merge-patch+json' -d '{"description":"patched"}')
  check "patch answers 200 with the change" "$status $(json_field 'd.get("description")')" [ "$status" = 200 ]
  status=$(gw GET "/v1/items/$id?tz=Asia/Tokyo")
  source=$(json_field 'd["local"]["source"]')
  check "?tz= read crosses items -> timezones" "$status, local.source=$source" [ "$status:$source" = 200:timezones ]
  status=$(gw DELETE "/v1/items/$id" -H "X-API-Key: $API_KEY")
  check "delete answers 204" "$status" [ "$status" = 204 ]
  status=$(gw GET "/v1/items/$id")
  check "the deleted item is gone" "$status" [ "$status" = 404 ]
  status=$(gw GET /docs)
  check "Swagger UI at /docs" "$status" [ "$status" = 200 ]
  status=$(gw GET /openapi.json)
  check "/openapi.json is the items document" "$status, openapi=$(json_field 'd.get("openapi")')" \
    is_items_document "$status"
}

is_items_document() { [ "$1" = 200 ] && grep -q '"/v1/items"' "$STATE_DIR/body"; }

# Some traffic across the hop, so that viz has something to show.
cross_the_hop() {
  gw GET '/v1/greeting?tz=Europe/Paris' 2>&1 >/dev/null | sed "s/\$/   # $1 times/" >&2
  [ "$PLAN" = 1 ] && return 0
  for _ in $(seq 2 "$1"); do gw GET '/v1/greeting?tz=Europe/Paris' >/dev/null 2>&1; done
}

assert_mtls() {
  step "mTLS: items -> timezones secured, with both identities; viz stat for both"
  cross_the_hop 30
  local l=("$LINKERD" --context "$CONTEXT")
  wait_until "viz edges shows items -> timezones" edge_items_to_timezones
  local edge
  edge=$(capture "${l[@]}" viz edges pod -n "$NAMESPACE" -o json | python3 scripts/cluster/viz.py edge items timezones)
  # viz shortens the identities to <serviceaccount>.<namespace> (viz/cmd/edges.go).
  check "items -> timezones is mTLS with the expected identities" "$edge" \
    [ "$edge" = "items.$NAMESPACE -> timezones.$NAMESPACE, tls" ]
  local stat app
  for app in items timezones; do
    cross_the_hop 10
    stat=$(capture "${l[@]}" viz stat rs -n "$NAMESPACE" -o json | python3 scripts/cluster/viz.py stat "$app")
    check "viz stat: $app has a success rate and requests per second" "$stat" [ -n "$stat" ]
  done
}

edge_items_to_timezones() {
  "$LINKERD" --context "$CONTEXT" viz edges pod -n "$NAMESPACE" -o json | python3 scripts/cluster/viz.py edge items timezones | grep -q ', tls$'
}

# `probe_from NAMESPACE POD CONTAINER URL`: what a curl from that container gets: an HTTP status,
# or curl's exit code when no HTTP answer came (7 refused, 28 timed out, 52/56 reset).
probe_from() {
  local cmd=(kubectl --context "$CONTEXT" exec -n "$1" "$2" -c "$3" -- sh -c "curl -s -m 5 -o /dev/null -w '%{http_code}' '$4'; echo \" exit=\$?\"")
  show "${cmd[@]}" >&2
  [ "$PLAN" = 1 ] && return 0
  "${cmd[@]}"
}

refused() {
  case $1 in
    "000 exit=7" | "000 exit=28" | "000 exit=52" | "000 exit=56" | "403 exit=0") return 0 ;;
  esac
  return 1
}

assert_default_deny() {
  step "Default deny: outsiders (meshed and not) refused on the API ports; timezones cannot call items"
  apply_from kubectl --context "$CONTEXT" create namespace "$OUTSIDER_NAMESPACE" --dry-run=client -o yaml
  local pod
  for pod in outsider-unmeshed outsider-meshed; do
    local inject=disabled
    [ $pod = outsider-meshed ] && inject=enabled
    k run "$pod" -n "$OUTSIDER_NAMESPACE" --image="$CURL_IMAGE" --restart=Never \
      --annotations="linkerd.io/inject=$inject" --command -- sleep 3600
  done
  k wait -n "$OUTSIDER_NAMESPACE" --for=condition=Ready pod/outsider-unmeshed pod/outsider-meshed --timeout="${STEP_TIMEOUT}s"
  local got target
  for pod in outsider-unmeshed outsider-meshed; do
    # The control: the same pod reaches the public Gateway, so a refusal below is the policy's.
    got=$(probe_from "$OUTSIDER_NAMESPACE" "$pod" "$pod" "http://meridian-nginx.$NAMESPACE/")
    check "$pod reaches the Gateway (control)" "$got" [ "${got% *}" != 000 ]
    for target in "items.$NAMESPACE:8080/healthz" "timezones.$NAMESPACE:8081/healthz"; do
      got=$(probe_from "$OUTSIDER_NAMESPACE" "$pod" "$pod" "http://$target")
      check "$pod is refused by $target" "$got" refused "$got"
    done
  done
  # timezones' own network namespace: an ephemeral container in its pod.
  local tz_pod
  tz_pod=$(kq get pods -n "$NAMESPACE" -l app.kubernetes.io/name=timezones -o jsonpath='{.items[0].metadata.name}')
  run kubectl --context "$CONTEXT" debug -n "$NAMESPACE" "${tz_pod:-TIMEZONES_POD}" --image="$CURL_IMAGE" \
    -c e2e-probe --profile=restricted --custom=scripts/cluster/probe-container.json -- sleep 600
  wait_until "the probe container runs in $tz_pod" probe_running "$tz_pod"
  got=$(probe_from "$NAMESPACE" "${tz_pod:-TIMEZONES_POD}" e2e-probe "http://items.$NAMESPACE:8080/v1/greeting")
  check "timezones cannot call items" "$got" refused "$got"
  # The control: over loopback (neither NetworkPolicy nor the proxy sees it) the probe reaches
  # timezones in its own pod, so the refusal above is the policy's, not a broken probe.
  got=$(probe_from "$NAMESPACE" "${tz_pod:-TIMEZONES_POD}" e2e-probe "http://127.0.0.1:8081/healthz")
  check "the probe reaches timezones over loopback (control)" "$got" [ "$got" = "200 exit=0" ]
  k delete namespace "$OUTSIDER_NAMESPACE" --wait=false
}

probe_running() {
  kubectl --context "$CONTEXT" get pod -n "$NAMESPACE" "$1" \
    -o jsonpath='{.status.ephemeralContainerStatuses[?(@.name=="e2e-probe")].state.running}' | grep -q startedAt
}

hpa_replicas() {
  kubectl --context "$CONTEXT" get hpa -n "$NAMESPACE" items -o jsonpath='{.status.currentReplicas}'
}

# k6 against the Gateway: it trusts the local CA through SSL_CERT_FILE (Go's root pool on
# Linux; k6 has no CA option for HTTP) and maps the Gateway's name to kind's port mapping with
# the `hosts` of a config file (load-tests/README.md, "hpa-ramp at dev size", cites both).
k6_gateway() {
  local hosts=$STATE_DIR/k6-hosts.json
  echo "+ echo '{\"hosts\": {\"$GATEWAY_HOST\": \"127.0.0.1\"}}' > $hosts"
  [ "$PLAN" = 1 ] || echo "{\"hosts\": {\"$GATEWAY_HOST\": \"127.0.0.1\"}}" >"$hosts"
  run env SSL_CERT_FILE="$CA_FILE" "$K6" run --no-usage-report --config "$hosts" \
    -e ITEMS_URL="https://$GATEWAY_HOST:$GATEWAY_PORT" -e TIMEZONES_URL=none -e API_KEY="$API_KEY" \
    -e SUMMARY_DIR="$STATE_DIR" "$@"
}

assert_hpa_follows_load() {
  step "k6 drives the HPA: hpa-ramp at dev size takes items above its minimum, then it scales back"
  local min
  min=$(kq get hpa -n "$NAMESPACE" items -o jsonpath='{.spec.minReplicas}')
  local peak_file=$STATE_DIR/hpa-peak
  local watcher=
  if [ "$PLAN" != 1 ]; then
    echo 0 >"$peak_file"
    watch_hpa_peak "$peak_file" &
    watcher=$!
  fi
  k6_gateway -e SCENARIO=hpa-ramp -e RATE="$HPA_RAMP_RATE" -e PEAK="$HPA_RAMP_PEAK" -e MAX_VUS="$HPA_RAMP_MAX_VUS" \
    load-tests/meridian.js
  [ -z "$watcher" ] || kill "$watcher"
  local peak
  peak=$([ "$PLAN" = 1 ] || cat "$peak_file")
  check "items scaled above its minimum under load" "minimum $min, peak $peak replicas" [ "${peak:-0}" -gt "${min:-1}" ]
  wait_until "items back at $min replicas after the load" replicas_are "$min"
  check "items scaled back after the load" "$( [ "$PLAN" = 1 ] || hpa_replicas) replicas" replicas_are "$min"
}

watch_hpa_peak() {
  local n
  while sleep 5; do
    n=$(hpa_replicas 2>/dev/null || echo 0)
    [ "${n:-0}" -gt "$(cat "$1")" ] && echo "$n" >"$1"
  done
}

replicas_are() { [ "$(hpa_replicas)" = "$1" ]; }

# Reads through the Gateway for a while (for the canary analysis, which needs traffic), in the
# background. The outcome counts go to $STATE_DIR/reads.
background_reads() {
  local seconds=$1
  show background: for "$seconds"s, GET /v1/greeting and /v1/items through the Gateway, 20/s >&2
  [ "$PLAN" = 1 ] && return 0
  (
    local deadline=$((SECONDS + seconds))
    while [ $SECONDS -lt $deadline ]; do
      curl -s -o /dev/null -w '%{http_code}\n' --max-time 5 --resolve "$GATEWAY_HOST:$GATEWAY_PORT:127.0.0.1" \
        --cacert "$CA_FILE" "https://$GATEWAY_HOST:$GATEWAY_PORT/v1/greeting" "https://$GATEWAY_HOST:$GATEWAY_PORT/v1/items?limit=5"
      sleep 0.1
    done >"$STATE_DIR/reads"
  ) &
  READER=$!
}

rollout_field() {
  kubectl --context "$CONTEXT" get rollout -n "$NAMESPACE" items -o jsonpath="$1"
}

assert_canary_promoted() {
  step "Canary: a new items image passes the Linkerd analysis and is promoted"
  run "$ENGINE" tag localhost/meridian-items:e2e localhost/meridian-items:e2e-next
  load_image localhost/meridian-items:e2e-next
  background_reads "$CANARY_SECONDS"
  k set image -n "$NAMESPACE" deployment/items items=localhost/meridian-items:e2e-next
  wait_until "the canary of e2e-next starts" canary_started
  wait_until "Rollout items healthy on e2e-next" stable_image_is localhost/meridian-items:e2e-next
  [ "$PLAN" = 1 ] || kill "$READER" 2>/dev/null || true
  local run_phase
  run_phase=$(kq get analysisrun -n "$NAMESPACE" --sort-by=.metadata.creationTimestamp -o jsonpath='{.items[-1:].status.phase}')
  check "the analysis passed and e2e-next is stable" "analysis $run_phase, stable image $( [ "$PLAN" = 1 ] || stable_image)" \
    [ "$run_phase" = Successful ]
}

canary_started() { [ "$(rollout_field '{.status.currentStepIndex}')" != "" ] && [ "$(rollout_field '{.status.phase}')" != Healthy ]; }
stable_image() {
  kubectl --context "$CONTEXT" get rs -n "$NAMESPACE" -l "rollouts-pod-template-hash=$(rollout_field '{.status.stableRS}')" \
    -o jsonpath='{.items[0].spec.template.spec.containers[?(@.name=="items")].image}'
}
stable_image_is() { rollout_phase_is items Healthy && [ "$(stable_image)" = "$1" ]; }

assert_faulty_canary_aborted() {
  step "Canary: a version with faults on (every API request a 500) is aborted and rolled back"
  background_reads "$CANARY_SECONDS"
  k set env -n "$NAMESPACE" deployment/items -c items FAULT_ERROR_RATE=1.0
  wait_until "the faulty canary is aborted" rollout_aborted
  [ "$PLAN" = 1 ] || kill "$READER" 2>/dev/null || true
  local status
  status=$(gw GET /v1/items?limit=1)
  check "aborted: the Rollout is Degraded, stable serves" "phase $( [ "$PLAN" = 1 ] || rollout_field '{.status.phase}'), abort=$( [ "$PLAN" = 1 ] || rollout_field '{.status.abort}'), read $status" \
    [ "$status" = 200 ]
  # Back to the stable template: Argo Rollouts returns to it at once, no canary.
  k set env -n "$NAMESPACE" deployment/items -c items FAULT_ERROR_RATE-
  wait_until "Rollout items healthy again" rollout_phase_is items Healthy
}

rollout_aborted() { [ "$(rollout_field '{.status.abort}')" = true ] && [ "$(rollout_field '{.status.phase}')" = Degraded ]; }

# A new pod template for both services (an annotation): each Rollout brings up new pods, moves
# traffic to them and scales the old ones down, which drain. k6 reads through the Gateway all
# along and may not see one failure (scripts/cluster/drain.js: rate==0).
assert_drain_fails_nothing() {
  step "Drain: both services' pods replaced under k6 load, 0 requests failed"
  local before after app
  before=$(kq get pods -n "$NAMESPACE" -l 'app.kubernetes.io/name in (items,timezones)' -o jsonpath='{.items[*].metadata.uid}')
  if [ "$PLAN" != 1 ]; then
    (sleep 10 && for app in items timezones; do restart_template "$app"; done) &
  fi
  echo "+ (after 10 s, in the background) restart_template items; restart_template timezones"
  k6_gateway -e DURATION="$DRAIN_SECONDS" scripts/cluster/drain.js
  for app in items timezones; do
    wait_until "Rollout $app healthy after the restart" rollout_phase_is "$app" Healthy
  done
  after=$(kq get pods -n "$NAMESPACE" -l 'app.kubernetes.io/name in (items,timezones)' -o jsonpath='{.items[*].metadata.uid}')
  check "every pod was replaced while k6 ran (and k6 passed its 0-failure threshold)" \
    "$(wc -w <<<"$before") pods before, $(comm -12 <(tr ' ' '\n' <<<"$before" | sort) <(tr ' ' '\n' <<<"$after" | sort) | wc -l) of them still running" \
    none_left "$before" "$after"
}

restart_template() {
  run kubectl --context "$CONTEXT" patch deployment -n "$NAMESPACE" "$1" --type merge \
    -p "{\"spec\":{\"template\":{\"metadata\":{\"annotations\":{\"meridian.example.com/restarted-at\":\"$(date -u +%FT%TZ)\"}}}}}"
}

none_left() {
  [ -n "$1" ] && [ -z "$(comm -12 <(tr ' ' '\n' <<<"$1" | sort) <(tr ' ' '\n' <<<"$2" | sort))" ]
}

assert_degraded_mode() {
  step "Degraded mode: timezones at 0 replicas, item CRUD still works, marked degraded; back at 1, it recovers"
  k scale rollout -n "$NAMESPACE" timezones --replicas=0
  wait_until "no timezones pods" no_pods timezones
  local status id marker
  status=$(create_item e2e-degraded)
  check "create works without timezones" "$status" [ "$status" = 201 ]
  id=$(json_field 'd["id"]')
  status=$(gw GET "/v1/items/$id?tz=Asia/Tokyo")
  marker=$([ "$PLAN" = 1 ] || tr -d '\r' <"$STATE_DIR/headers" | sed -n 's/^meridian-degraded: //Ip')
  check "a ?tz= read answers, marked degraded" "$status, degraded=$(json_field 'd["local"]["degraded"]'), Meridian-Degraded: $marker" \
    [ "$status:$(json_field 'd["local"]["degraded"]')" = 200:True ]
  k scale rollout -n "$NAMESPACE" timezones --replicas=1
  wait_until "timezones healthy again" rollout_phase_is timezones Healthy
  wait_until "?tz= reads not degraded" not_degraded "$id"
  status=$(gw GET "/v1/items/$id?tz=Asia/Tokyo")
  check "recovered: the read crosses the hop again" "$status, source=$(json_field 'd["local"]["source"]')" \
    [ "$status:$(json_field 'd["local"]["source"]')" = 200:timezones ]
  gw DELETE "/v1/items/$id" -H "X-API-Key: $API_KEY" >/dev/null
}

no_pods() { [ -z "$(kubectl --context "$CONTEXT" get pods -n "$NAMESPACE" -l "app.kubernetes.io/name=$1" -o name)" ]; }
not_degraded() { [ "$(gw GET "/v1/items/$1?tz=Asia/Tokyo" 2>/dev/null):$(json_field 'd["local"]["source"]')" = 200:timezones ]; }

assert_observability() {
  step "Observability: Prometheus scrapes both services through the mesh; the dashboards' main queries return data"
  show kubectl --context "$CONTEXT" port-forward -n monitoring svc/kube-prometheus-stack-prometheus 19090:9090 '&' >&2
  local forward
  if [ "$PLAN" != 1 ]; then
    kubectl --context "$CONTEXT" port-forward -n monitoring svc/kube-prometheus-stack-prometheus 19090:9090 >/dev/null 2>&1 &
    forward=$!
  fi
  cross_the_hop 20
  local report
  report=$(capture python3 scripts/cluster/dashboard_data.py http://127.0.0.1:19090 "$NAMESPACE")
  [ "$PLAN" = 1 ] || kill "$forward"
  check "both services' targets up, every main panel has data" "$report" eval '[[ $report != *MISSING* && -n $report ]]'
}
