#!/usr/bin/env python3
"""From measured throughput to HPA settings, and a replay of the HPA over the k6 hpa-ramp
profile. Reads docs/performance.json (load-tests/bench.sh) and the ramp's shape from
load-tests/hpa-ramp.json; writes docs/scaling.md, docs/images/hpa-replay.png and the ramp's
default rates into hpa-ramp.json. With --check, only verifies that the prod overlay's HPAs and
CPU requests and the ramp's rates are the ones derived here, and that load-tests/README.md's
dev-size hpa-ramp runs the rates derived for the dev overlay, which the replay scales out and
back (the test command runs that), so a changed benchmark, a hand-edited HPA or a retuned ramp
cannot drift apart silently.
Usage: python3 load-tests/capacity.py [--check]"""

import json
import math
import pathlib
import subprocess
import sys

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
RAMP = REPO / "load-tests/hpa-ramp.json"

# Design choices (docs/scaling.md explains each).
CPU_REQUEST_MILLI = 250          # prod request of each app container
TARGET_UTILIZATION = 0.70        # HPA target: 30% headroom for the time it takes to scale
DESIGN_PEAK_RPS = 2000           # the load prod must absorb: the benchmark's arrival rate
PEAK_HEADROOM = 2.0              # maxReplicas covers twice the design peak
MIN_REPLICAS = 3                 # one per zone, so a zone outage leaves two
# The k6 traffic mix's share of items requests per measured endpoint cost (load-tests/mix.js:
# ?tz reads and the greeting cost like the hop; creates are costed like a list read).
ITEMS_MIX = {"item by id": 20, "item list": 15 + 10, "item by id ?tz (hop)": 15 + 10 + 10}
TIMEZONES_MIX = {"timezone detail": 1}
# The HPA replay.
SYNC_SECONDS = 15                # the controller's sync period
TOLERANCE = 0.10                 # no change while |utilization / target - 1| <= 10%
SCALE_DOWN_WINDOW = 300          # behavior.scaleDown.stabilizationWindowSeconds
POD_READY_SECONDS = 20           # scheduling + pull + start (start-to-ready itself is ~20 ms)


def per_core_rps(fixed, mix):
    """Requests/s one core serves of a mix: the weighted harmonic mean of each endpoint's rate."""
    total = sum(mix.values())
    return total / sum(weight / fixed[name]["rps"] for name, weight in mix.items())


def derive(perf):
    out = {}
    for service, mix in (("items", ITEMS_MIX), ("timezones", TIMEZONES_MIX)):
        core = per_core_rps(perf["fixed"], mix)
        at_request = core * CPU_REQUEST_MILLI / 1000
        at_target = at_request * TARGET_UTILIZATION
        out[service] = {
            "per_core_rps": core, "per_pod_rps_at_request": at_request, "per_pod_rps_at_target": at_target,
            "min_replicas": MIN_REPLICAS,
            # Never below twice the minimum, so the HPA always has room to act.
            "max_replicas": max(2 * MIN_REPLICAS, math.ceil(DESIGN_PEAK_RPS * PEAK_HEADROOM / at_target)),
        }
    return out


def ramp_rates(derived):
    """The hpa-ramp's base and peak: a quarter of, and twice, what the minimum replicas serve
    at the CPU target."""
    return rates_for_min_replicas(derived["items"]["per_pod_rps_at_target"] * MIN_REPLICAS)


def rates_for_min_replicas(at_target):
    return round(at_target * 0.25), round(at_target * 2)


def dev_ramp(derived, dev):
    """hpa-ramp's rates for the dev overlay's items (load-tests/README.md documents them) by the
    same rule as prod's, and the replicas the HPA replay gives over them."""
    per_pod_at_request = derived["items"]["per_core_rps"] * dev["cpu_request_milli"] / 1000
    at_target = per_pod_at_request * dev["target_percent"] / 100
    base, peak = rates_for_min_replicas(at_target * dev["min_replicas"])
    return base, peak, per_pod_at_request


def ramp_profile(ramp, base, peak):
    """Offered load per second of k6's hpa-ramp scenario (load-tests/meridian.js), as k6's
    ramping-arrival-rate executor moves linearly to each stage's target."""
    stages = [(peak if s["to"] == "peak" else base, s["seconds"]) for s in ramp["stages"]]
    load, current = [], base
    for target, seconds in stages:
        for s in range(seconds):
            load.append(current + (target - current) * (s + 1) / seconds)
        current = target
    return load


def replay(load, pod_capacity, min_replicas, max_replicas):
    """The HPA algorithm: desired = ceil(current * utilization / target), within the tolerance,
    doubling at most per sync when scaling up, and taking the highest recommendation of the
    last 5 minutes (at most one pod a minute) when scaling down. Utilization is the load per
    ready pod over what one pod serves at 100% of its CPU request."""
    replicas, ready_at, history, timeline, last_down = min_replicas, [], [], [], -math.inf
    for second, rps in enumerate(load):
        ready_at = [t for t in ready_at if t > second]
        ready = replicas - len(ready_at)
        utilization = rps / (ready * pod_capacity)
        if second % SYNC_SECONDS == 0:
            ratio = utilization / TARGET_UTILIZATION
            desired = replicas if abs(ratio - 1) <= TOLERANCE else math.ceil(ready * ratio)
            desired = min(max(desired, min_replicas), max_replicas)
            history = [(t, d) for t, d in history if t > second - SCALE_DOWN_WINDOW] + [(second, desired)]
            if desired > replicas:
                new = min(desired, replicas * 2) - replicas
                ready_at += [second + POD_READY_SECONDS] * new
                replicas += new
            else:
                stabilized = max(d for _, d in history)
                if stabilized < replicas and second - last_down >= 60:
                    replicas, last_down = replicas - 1, second
        timeline.append((second, rps, replicas, ready, min(utilization, 5.0)))
    return timeline


def chart(timeline, path, target_rps):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    seconds = [t[0] / 60 for t in timeline]
    fig, load_axis = plt.subplots(figsize=(9, 4.5))
    load_axis.plot(seconds, [t[1] for t in timeline], color="tab:blue", label="offered load (req/s)")
    load_axis.axhline(target_rps, color="tab:blue", linestyle=":", label="min replicas at the CPU target")
    load_axis.set_xlabel("minutes into the hpa-ramp scenario")
    load_axis.set_ylabel("requests/s")
    pods = load_axis.twinx()
    pods.step(seconds, [t[2] for t in timeline], where="post", color="tab:red", label="replicas (desired)")
    pods.step(seconds, [t[3] for t in timeline], where="post", color="tab:orange", linestyle="--", label="replicas ready")
    pods.set_ylabel("items replicas")
    pods.set_ylim(0, max(t[2] for t in timeline) + 1)
    lines = load_axis.get_legend_handles_labels(), pods.get_legend_handles_labels()
    load_axis.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], loc="upper right")
    load_axis.set_title("Predicted items HPA over k6 hpa-ramp (prod settings)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def overlay_settings(overlay):
    out = subprocess.run(["kubectl", "kustomize", str(REPO / "k8s/overlays" / overlay)],
                         check=True, capture_output=True, text=True).stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    settings = {}
    for service in ("items", "timezones"):
        hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"] == service)
        deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == service)
        cpu = deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
        target = next(m["containerResource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]
                      if m["type"] == "ContainerResource" and m["containerResource"]["name"] == "cpu")
        settings[service] = {"min_replicas": hpa["spec"]["minReplicas"], "max_replicas": hpa["spec"]["maxReplicas"],
                             "cpu_request_milli": int(cpu.rstrip("m")), "target_percent": target}
    return settings


def check(derived, ramp):
    problems = []
    base, peak = ramp_rates(derived)
    if (ramp["base_rps"], ramp["peak_rps"]) != (base, peak):
        problems.append(f"hpa-ramp.json rates are {ramp['base_rps']}/{ramp['peak_rps']} req/s, "
                        f"derived {base}/{peak} (rerun load-tests/capacity.py)")
    for service, actual in overlay_settings("prod").items():
        expected = {"min_replicas": derived[service]["min_replicas"], "max_replicas": derived[service]["max_replicas"],
                    "cpu_request_milli": CPU_REQUEST_MILLI, "target_percent": round(TARGET_UTILIZATION * 100)}
        for key, value in expected.items():
            if actual[key] != value:
                problems.append(f"prod {service} {key} is {actual[key]}, derived {value} (load-tests/capacity.py)")
    return problems + check_dev_ramp(derived, ramp)


def check_dev_ramp(derived, ramp):
    """The dev-size hpa-ramp command in load-tests/README.md carries the rates derived for the dev
    overlay, and the HPA replay over them leaves one replica and comes back to it."""
    dev = overlay_settings("dev")["items"]
    base, peak, per_pod_at_request = dev_ramp(derived, dev)
    problems = []
    if f"-e RATE={base} -e PEAK={peak} " not in (REPO / "load-tests/README.md").read_text():
        problems.append(f"load-tests/README.md: the dev-size hpa-ramp should run RATE={base} PEAK={peak}")
    timeline = replay(ramp_profile(ramp, base, peak), per_pod_at_request, dev["min_replicas"], dev["max_replicas"])
    if max(t[2] for t in timeline) <= dev["min_replicas"] or timeline[-1][2] != dev["min_replicas"]:
        problems.append(f"hpa-ramp at dev size ({base}/{peak} req/s) should scale items out and back "
                        f"to {dev['min_replicas']}: replicas {[t[2] for t in timeline[::60]]}")
    return problems


def main():
    perf = json.loads((DOCS / "performance.json").read_text())
    derived = derive(perf)
    ramp = json.loads(RAMP.read_text())
    if sys.argv[1:] == ["--check"]:
        problems = check(derived, ramp)
        print("\n".join(problems) or "prod HPA settings and the hpa-ramp rates (prod's and dev's) match the capacity model")
        sys.exit(1 if problems else 0)
    items = derived["items"]
    base, peak = ramp_rates(derived)
    RAMP.write_text(json.dumps({**ramp, "base_rps": base, "peak_rps": peak}, indent=2) + "\n")
    timeline = replay(ramp_profile(ramp, base, peak), items["per_pod_rps_at_request"],
                      items["min_replicas"], items["max_replicas"])
    chart(timeline, DOCS / "images/hpa-replay.png", items["per_pod_rps_at_target"] * MIN_REPLICAS)
    (DOCS / "scaling.md").write_text(report(perf, derived, timeline, base, peak, ramp))
    print(f"wrote {DOCS / 'scaling.md'}; k6 hpa-ramp: RATE={base} PEAK={peak}")


def describe(ramp, base, peak):
    """'628 req/s for 2 min, to 5027 req/s over 2 min, ...' from the stages."""
    parts, current = [], base
    for stage in ramp["stages"]:
        target = peak if stage["to"] == "peak" else base
        minutes = f"{stage['seconds'] / 60:g} min"
        parts.append(f"{target} req/s for {minutes}" if target == current else f"to {target} req/s over {minutes}")
        current = target
    return ", ".join(parts)


def report(perf, derived, timeline, base, peak, ramp):
    rows = "\n".join(
        f"| {s} | {d['per_core_rps']:,.0f} | {d['per_pod_rps_at_request']:,.0f} | {d['per_pod_rps_at_target']:,.0f} "
        f"| {d['min_replicas']} | {d['max_replicas']} |" for s, d in derived.items())
    marks = "\n".join(f"| {t // 60}:{t % 60:02d} | {rps:,.0f} | {replicas} | {ready} | {util:.0%} |"
                      for t, rps, replicas, ready, util in timeline if t % 60 == 0)
    return f"""# Scaling: from measured throughput to HPA settings

GENERATED by `python3 load-tests/capacity.py` from [performance.json](performance.json) (the last
`load-tests/bench.sh` run); rerun both to refresh. `python3 load-tests/capacity.py --check`, part
of the test command, fails when the prod overlay's HPAs or CPU requests differ from what is
derived here.

## Capacity model

1. **Per core.** The benchmark ran each service on one core. Weighting each measured endpoint by
   its share of the k6 traffic mix (`load-tests/mix.js`; reads with `?tz=` and the greeting cost
   like the hop, creates like a list read) gives what one core serves of the mix: the weighted
   harmonic mean of the endpoints' fixed-concurrency throughput. items' hop figure includes the
   timezones work on the same core, so it is conservative.
2. **Per pod.** A pod gets its CPU request, {CPU_REQUEST_MILLI}m in prod: {CPU_REQUEST_MILLI / 1000:g} of a core's rate. (The
   limit, 2 cores, lets a pod burst above this; the HPA reasons in requests.)
3. **HPA target {TARGET_UTILIZATION:.0%}.** The HPA adds pods when the app container's CPU passes
   {TARGET_UTILIZATION:.0%} of its request, so a pod at target serves {TARGET_UTILIZATION:.0%} of its
   request-rate; the other {1 - TARGET_UTILIZATION:.0%} absorbs growth during the ~{SYNC_SECONDS + POD_READY_SECONDS} s
   it takes to notice and start a pod.
4. **Replicas.** min {MIN_REPLICAS}: one per zone (topology spread), so losing a zone leaves two.
   max: enough pods at target for {PEAK_HEADROOM:g}× the design peak of {DESIGN_PEAK_RPS:,} req/s, and
   never below twice the minimum, so the HPA always has room to act.

| Service | mix req/s per core | per pod at request | per pod at target | minReplicas | maxReplicas |
|---|---|---|---|---|---|
{rows}

The prod overlay (`k8s/overlays/prod/kustomization.yaml`) sets exactly these; its comments point
here. dev keeps 1 to 3 replicas and smaller requests: it is not sized for load.

## The HPA replayed over k6's hpa-ramp

`load-tests/meridian.js` scenario `hpa-ramp` (its shape and these default rates are in
`load-tests/hpa-ramp.json`): {describe(ramp, base, peak)}. The peak is twice what the minimum
replicas absorb at the target. Run it against prod with

```sh cluster
k6 run --no-usage-report -e SCENARIO=hpa-ramp -e RATE={base} -e PEAK={peak} \\
  -e ITEMS_URL=https://meridian.example.com -e TIMEZONES_URL=none -e API_KEY="$API_KEY" load-tests/meridian.js
kubectl get hpa -n meridian-prod -w
```

The replay applies the HPA algorithm every {SYNC_SECONDS} s: desired = ceil(ready × utilization /
target), no change within a {TOLERANCE:.0%} tolerance, at most doubling per step on the way up,
and on the way down the highest recommendation of the last {SCALE_DOWN_WINDOW // 60} minutes, one pod per
minute. New pods take {POD_READY_SECONDS} s to serve. It models items' CPU as proportional to its
request rate, which the benchmark supports below saturation.

![predicted replicas](images/hpa-replay.png)

| time | offered req/s | replicas | ready | CPU / request |
|---|---|---|---|---|
{marks}

What to look for in `kubectl get hpa -w`: the scale-out starting during the ramp, a plateau
during the hold, and the scale-in only after the 5-minute window once the load drops. Real
pods differ by their start time and by the metrics pipeline's delay (metrics-server scrapes
every 15 s), so expect the same shape a little later, not the same second.
"""


if __name__ == "__main__":
    main()
