#!/usr/bin/env python3
"""Turns one service of the rendered dev overlay into what `podman kube play` (4.3) can run
here, changing only what podman or this machine cannot do, each for a stated reason:
- only the service's Deployment and the ConfigMaps and Secrets it uses (podman ignores
  Services, HPAs, policies);
- Secrets become ConfigMaps: podman 4.3 mounts Secret volumes as base64 text;
- the locally built image; no httpGet probes (podman turns them into curl, absent in a
  distroless image); one replica;
- the API port published on 127.0.0.1 only (hostPort + hostIP);
- items: SQLite on its /tmp emptyDir (the dev PostgreSQL image cannot be pulled here), and
  timezones at the address podman gave it (podman has no Services).
Usage: podman_play.py SERVICE IMAGE HOST_PORT [TIMEZONES_URL] < rendered.yaml > play.yaml"""

import base64
import sys

import yaml


def main(service, image, host_port, timezones_url=None):
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == service)
    pod = deployment["spec"]["template"]["spec"]
    container = next(c for c in pod["containers"] if c["name"] == service)
    deployment["spec"]["replicas"] = 1
    container["image"] = image
    container["imagePullPolicy"] = "IfNotPresent"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        container.pop(probe, None)
    for port in container["ports"]:
        if port["name"] == "http":
            port.update(hostPort=int(host_port), hostIP="127.0.0.1")
    used_configmaps = {s["configMapRef"]["name"] for s in container.get("envFrom", [])}
    objects = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] in used_configmaps]
    if timezones_url:
        # In the ConfigMap itself: podman 4.3 lets envFrom override env, unlike Kubernetes.
        for configmap in objects:
            if "TIMEZONES_URL" in configmap["data"]:
                configmap["data"]["TIMEZONES_URL"] = timezones_url
    for volume in pod.get("volumes", []):
        if "secret" not in volume:
            continue
        name = volume["secret"]["secretName"]
        secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"] == name)
        data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
        if "database-url" in data:
            data["database-url"] = "sqlite:///tmp/items.db"
        objects.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name}, "data": data})
        volume["configMap"] = {"name": name, "defaultMode": volume.pop("secret").get("defaultMode", 0o440)}
    yaml.safe_dump_all([*objects, deployment], sys.stdout, sort_keys=False)


if __name__ == "__main__":
    if len(sys.argv) not in (4, 5):
        sys.exit(__doc__)
    main(*sys.argv[1:])
