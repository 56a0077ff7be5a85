#!/usr/bin/env python3
"""Regenerates upstream-cli.json (stdout) from git mirrors of kind, helm and linkerd2 at the
tags pinned in tools.sh: every flag a command registers, read from the Go functions that build
it, with path:line at that tag. The mirrors come from the session `fetch` tool; KIND_GIT,
HELM_GIT and LINKERD_GIT point at other bare clones. Nothing is built or run from them.
Usage: scripts/cluster/read-upstream-cli.py > scripts/cluster/upstream-cli.json"""
import json
import os
import re
import subprocess
import sys

import yaml

PFLAG_TYPES = ("Bool|BoolSlice|String|StringSlice|StringArray|StringToString|StringToInt|Int|Int8|Int16|Int32|Int64|"
               "IntSlice|Uint|Uint8|Uint16|Uint32|Uint64|UintSlice|Duration|DurationSlice|Float32|Float64|IP|IPSlice|Count")
PFLAG_CALL = re.compile(r"\.(?:(?P<t>(?:%s))(?P<var>Var)?(?P<p>P)?|(?P<v>Var)(?P<vp>P)?)\(" % PFLAG_TYPES)
LINKERD_FLAG_CALL = re.compile(r"\bflag\.New\w+?Flag(?P<lp>P)?\(")

def show(gitdir, rev, path):
    return subprocess.run(["git", "--git-dir", gitdir, "show", f"{rev}:{path}"], check=True,
                          capture_output=True, text=True).stdout

def split_args(text, start):
    """Top-level comma-separated args of the call whose '(' is at text[start-1]."""
    depth, i, args, cur = 0, start, [], []
    while i < len(text):
        c = text[i]
        if c in "\"'`":
            q = c; j = i + 1
            while text[j] != q:
                j += 2 if (text[j] == "\\" and q != "`") else 1
            cur.append(text[i:j + 1]); i = j + 1; continue
        if c in "([{": depth += 1
        elif c in ")]}":
            if depth == 0:
                args.append("".join(cur).strip()); return args
            depth -= 1
        elif c == "," and depth == 0:
            args.append("".join(cur).strip()); cur = []; i += 1; continue
        cur.append(c); i += 1
    raise ValueError("unterminated call")

def literal(arg, consts):
    if arg.startswith('"') and arg.endswith('"'):
        return json.loads(arg)
    if arg.startswith("`"):
        return arg[1:-1]
    return consts.get(arg)

def func_body(text, name):
    m = re.search(r"^func (?:\([^)]*\) )?%s\(" % re.escape(name), text, re.M)
    if not m:
        raise KeyError(name)
    # the body's opening brace is the first one ending a line after the signature starts
    i = text.find("{\n", m.end())
    depth, j = 0, i
    while True:
        if text[j] == "{": depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0: return m.start(), j + 1
        j += 1

def flags_in(text, lo=0, hi=None, consts=None):
    consts = consts or {}
    hi = len(text) if hi is None else hi
    out = []
    for m in list(PFLAG_CALL.finditer(text, lo, hi)) + list(LINKERD_FLAG_CALL.finditer(text, lo, hi)):
        args = split_args(text, m.end())
        if m.re is LINKERD_FLAG_CALL:
            name_i, has_short = 1, bool(m.group("lp"))
        elif m.group("v"):
            name_i, has_short = 1, bool(m.group("vp"))
        else:
            name_i, has_short = (1 if m.group("var") else 0), bool(m.group("p"))
        # a registration passes at least the name, (shorthand,) default and usage after any
        # target; fewer arguments is some other call, e.g. time.Duration(0)
        if len(args) < name_i + 3 + has_short - (1 if m.group(0) in (".Var(", ".VarP(") else 0):
            continue
        name = literal(args[name_i], consts)
        if name is None:
            # a flag whose name is computed would silently drop out of the contract
            sys.exit(f"cannot read the flag name of the call at offset {m.start()}: {args}")
        short = literal(args[name_i + 1], consts) if has_short else ""
        line = text.count("\n", 0, m.start()) + 1
        out.append({"name": name, "short": short or "", "line": line})
    return sorted(out, key=lambda f: f["line"])

def consts_of(text):
    return dict(re.findall(r'^\s*(\w+)\s*=\s*"([^"]*)"', text, re.M))

KIND = (os.environ.get("KIND_GIT", "/work/.mirror/kubernetes-sigs+kind/repo"), "kubernetes-sigs/kind", "v0.32.0")
HELM = (os.environ.get("HELM_GIT", "/work/.mirror/helm+helm/repo"), "helm/helm", "v3.21.4")
L5D = (os.environ.get("LINKERD_GIT", "/work/.mirror/linkerd+linkerd2/repo"), "linkerd/linkerd2", "version-2.20")

def commit(gitdir, tag):
    return subprocess.run(["git", "--git-dir", gitdir, "rev-parse", tag + "^{commit}"],
                          check=True, capture_output=True, text=True).stdout.strip()

def surface(repo, parts, consts_from=()):
    """parts: (path, function name or None for the whole file)."""
    gitdir, _, tag = repo
    consts = {}
    for path in consts_from:
        consts.update(consts_of(show(gitdir, tag, path)))
    flags, short, cites = [], [], {}
    for path, func in parts:
        text = show(gitdir, tag, path)
        lo, hi = func_body(text, func) if func else (0, None)
        found = flags_in(text, lo, hi, consts)
        if not found:
            sys.exit(f"no flags found in {path} {func}")
        for f in found:
            long = "--" + f["name"]
            if long not in flags:
                flags.append(long)
                cites[long] = f"{path}:{f['line']}"
            if f["short"] and "-" + f["short"] not in short:
                short.append("-" + f["short"])
                cites["-" + f["short"]] = f"{path}:{f['line']}"
    marks = {"deprecated": [], "hidden": []}
    for path in dict.fromkeys(p for p, _ in parts):
        text = show(gitdir, tag, path)
        for kind_, key in (("MarkDeprecated", "deprecated"), ("MarkHidden", "hidden")):
            for m in re.finditer(r'\.%s\("([^"]+)"' % kind_, text):
                if "--" + m.group(1) in flags and "--" + m.group(1) not in marks[key]:
                    marks[key].append("--" + m.group(1))
    entry = {"flags": flags, "short": short, "source": parts[0][0], "cites": cites}
    entry.update({k: v for k, v in marks.items() if v})
    return entry

def use_line(repo, path, func=None):
    gitdir, _, tag = repo
    text = show(gitdir, tag, path)
    lo, hi = func_body(text, func) if func else (0, len(text))
    m = re.search(r'Use:\s*"([^"]*)"', text[lo:hi])
    return m.group(1), f"{path}:{text.count(chr(10), 0, lo + m.start()) + 1}"

def with_use(repo, entry, path, func=None):
    entry["use"], entry["use_cite"] = use_line(repo, path, func)
    return entry

def header(repo, version):
    gitdir, name, tag = repo
    return {"version": version, "source": {"repo": name, "tag": tag, "commit": commit(gitdir, tag)}}

# ---- kind ----
kind = header(KIND, "v0.32.0")
kc = "pkg/cmd/kind/"
kind["global"] = surface(KIND, [(kc + "root.go", "NewCommand")])
kind["commands"] = {}
for cmd, path in [("create cluster", "create/cluster/createcluster.go"),
                  ("delete cluster", "delete/cluster/deletecluster.go"),
                  ("load docker-image", "load/docker-image/docker-image.go"),
                  ("load image-archive", "load/image-archive/image-archive.go"),
                  ("export logs", "export/logs/logs.go"),
                  ("get kubeconfig", "get/kubeconfig/kubeconfig.go")]:
    kind["commands"][cmd] = with_use(KIND, surface(KIND, [(kc + path, "NewCommand")]), kc + path, "NewCommand")
gc = kc + "get/clusters/clusters.go"
kind["commands"]["get clusters"] = with_use(KIND, {"flags": [], "short": [], "source": gc, "cites": {},
    "note": "registers no flags of its own (Args: cobra.NoArgs); only the global ones apply"}, gc, "NewCommand")
rt = show(KIND[0], KIND[2], "pkg/internal/runtime/runtime.go")
kind["environment"] = {
    "KIND_EXPERIMENTAL_PROVIDER": {
        "read_at": "pkg/internal/runtime/runtime.go:%d" % (rt[:rt.index('os.Getenv("KIND_EXPERIMENTAL_PROVIDER")')].count("\n") + 1),
        "values": {"": "autodetect: docker, then nerdctl, then podman; docker when none is found (pkg/cluster/provider.go DetectNodeProvider/NewProvider)",
                   "podman": "ProviderWithPodman", "docker": "ProviderWithDocker",
                   "nerdctl": "ProviderWithNerdctl", "finch": "ProviderWithNerdctl", "nerdctl.lima": "ProviderWithNerdctl",
                   "other": "ignored with a warning, then autodetect"},
        "honoured_by": sorted(l.split(":")[1] for l in subprocess.run(
            ["git", "--git-dir", KIND[0], "grep", "-l", "runtime.GetDefault", KIND[2], "--", "pkg/cmd"],
            check=True, capture_output=True, text=True).stdout.split())},
    "KIND_CLUSTER_NAME": {"read_at": "pkg/internal/cli/override.go:30",
                          "meaning": "default cluster name when --name is not given (flag wins)"}}

# ---- kind v1alpha4 config ----
tpath = "pkg/apis/config/v1alpha4/types.go"
ttext = show(KIND[0], KIND[2], tpath)
types, cites = {}, {}
for m in re.finditer(r"^type (\w+) struct \{\n(.*?)^\}", ttext, re.M | re.S):
    fields = []
    for fm in re.finditer(r'json:"([^",]*)[^"]*"', m.group(2)):
        line = ttext.count("\n", 0, m.start(2) + fm.start()) + 1
        if fm.group(1) == "":  # ",inline": the embedded struct's fields belong here
            inline = re.match(r"\s*(\w+)", m.group(2)[m.group(2).rfind("\n", 0, fm.start()) + 1:]).group(1)
            fields.append("@inline:" + inline)
            continue
        fields.append(fm.group(1))
        cites[f"{m.group(1)}.{fm.group(1)}"] = f"{tpath}:{line}"
    types[m.group(1)] = fields
for name, fields in types.items():
    expanded = []
    for f in fields:
        expanded.extend(types[f.split(":")[1]] if f.startswith("@inline:") else [f])
    types[name] = expanded
enums = {}
for m in re.finditer(r'^\s*(\w+)\s+(NodeRole|ClusterIPFamily|ProxyMode|MountPropagation|PortMappingProtocol)\s*=\s*"([^"]*)"', ttext, re.M):
    enums.setdefault(m.group(2), []).append(m.group(3))
enc = subprocess.run(["git", "--git-dir", KIND[0], "grep", "-n", '"kind.x-k8s.io/v1alpha4"', KIND[2], "--", "pkg/internal/apis/config/encoding"],
                     check=True, capture_output=True, text=True).stdout.split("\n")[0]
kind_config = {"apiVersion": "kind.x-k8s.io/v1alpha4", "apiVersion_cite": ":".join(enc.split(":")[1:3]),
               "strict": "unknown fields are an error: v1alpha4 configs are decoded with yamlUnmarshalStrict "
                         "(pkg/internal/apis/config/encoding/load.go:72)",
               "source": {"repo": KIND[1], "tag": KIND[2], "commit": commit(KIND[0], KIND[2]), "path": tpath},
               "types": types, "enums": enums, "cites": cites}

# ---- helm ----
helm = header(HELM, "v3.21.4")
hc = "cmd/helm/"
shared = [(hc + "flags.go", "addChartPathOptionsFlags"), (hc + "flags.go", "addValueOptionsFlags"),
          (hc + "flags.go", "bindOutputFlag"), (hc + "flags.go", "bindPostRenderFlag")]
hconsts = [hc + "flags.go"]
helm["global"] = surface(HELM, [("pkg/cli/environment.go", "AddFlags")])
helm["global"]["note"] = ("cmd/helm/root.go newRootCmd also adds klog's Go flags as hidden persistent flags "
                          "(addKlogFlags, cmd/helm/flags.go); they are not listed here")
helm["commands"] = {
    "upgrade": with_use(HELM, surface(HELM, [(hc + "upgrade.go", "newUpgradeCmd")] + shared, hconsts), hc + "upgrade.go", "newUpgradeCmd"),
    "install": with_use(HELM, surface(HELM, [(hc + "install.go", "newInstallCmd"), (hc + "install.go", "addInstallFlags")] + shared, hconsts),
                        hc + "install.go", "newInstallCmd"),
    "uninstall": with_use(HELM, surface(HELM, [(hc + "uninstall.go", "newUninstallCmd")]), hc + "uninstall.go", "newUninstallCmd"),
    "repo add": with_use(HELM, surface(HELM, [(hc + "repo_add.go", "newRepoAddCmd")]), hc + "repo_add.go", "newRepoAddCmd"),
    "version": with_use(HELM, surface(HELM, [(hc + "version.go", "newVersionCmd")]), hc + "version.go", "newVersionCmd"),
}

# ---- linkerd ----
lk = header(L5D, "edge-26.6.3")
lk["source"]["edge_tag"] = "edge-26.6.3"
lk["source"]["edge_commit"] = commit(L5D[0], "edge-26.6.3")
lk["source"]["note"] = ("version-2.20 is edge-26.6.3 plus one commit that changes only go.mod/go.sum "
                        "(git diff --stat edge-26.6.3 version-2.20), so the CLI source read here is edge-26.6.3's")
lk["global"] = surface(L5D, [("cli/cmd/root.go", "NewRootCmd")])
lk["viz_global"] = surface(L5D, [("viz/cmd/root.go", "NewCmdViz")])
lk["viz_global"]["note"] = ("persistent flags of `linkerd viz`; its subcommands also inherit `linkerd`'s persistent flags "
                            "that viz does not redefine (cobra), e.g. --cni-namespace")
vo = [("pkg/flags/flags.go", "AddValueOptionsFlags")]
lk["commands"] = {
    "install": with_use(L5D, surface(L5D, [("cli/cmd/install.go", "newCmdInstall"), ("cli/cmd/options.go", "makeInstallFlags"),
                                          ("cli/cmd/options.go", "makeInstallUpgradeFlags"), ("cli/cmd/options.go", "makeProxyFlags")] + vo),
                        "cli/cmd/install.go", "newCmdInstall"),
    "install-cni": with_use(L5D, surface(L5D, [("cli/cmd/install-cni-plugin.go", "newCmdInstallCNIPlugin")] + vo),
                            "cli/cmd/install-cni-plugin.go", "newCmdInstallCNIPlugin"),
    "check": with_use(L5D, surface(L5D, [("cli/cmd/check.go", "checkFlagSet"), ("cli/cmd/check.go", "nonConfigFlagSet")]),
                      "cli/cmd/check.go", "newCmdCheck"),
    "version": with_use(L5D, surface(L5D, [("cli/cmd/version.go", "newCmdVersion")]), "cli/cmd/version.go", "newCmdVersion"),
    "uninstall": with_use(L5D, surface(L5D, [("cli/cmd/uninstall.go", "newCmdUninstall")]), "cli/cmd/uninstall.go", "newCmdUninstall"),
    "viz install": with_use(L5D, surface(L5D, [("viz/cmd/install.go", "newCmdInstall")] + vo), "viz/cmd/install.go", "newCmdInstall"),
    "viz check": with_use(L5D, surface(L5D, [("viz/cmd/check.go", "NewCmdCheck")]), "viz/cmd/check.go", "NewCmdCheck"),
    "viz edges": with_use(L5D, surface(L5D, [("viz/cmd/edges.go", "NewCmdEdges")]), "viz/cmd/edges.go", "NewCmdEdges"),
    "viz stat": with_use(L5D, surface(L5D, [("viz/cmd/stat.go", "NewCmdStat")]), "viz/cmd/stat.go", "NewCmdStat"),
    "viz uninstall": with_use(L5D, surface(L5D, [("viz/cmd/uninstall.go", "newCmdUninstall")]), "viz/cmd/uninstall.go", "newCmdUninstall"),
}

def top_keys(repo, path):
    text = show(repo[0], repo[2], path)
    keys = list(yaml.safe_load(text).keys())
    lines = {m.group(1): text.count("\n", 0, m.start()) + 1 for m in re.finditer(r"^([A-Za-z_][\w-]*):", text, re.M)}
    assert set(keys) == set(lines), (set(keys) ^ set(lines))
    return {"path": path, "keys": keys, "cites": {k: f"{path}:{lines[k]}" for k in keys}}

lk["commands"]["install"]["set_value_paths"] = dict(top_keys(L5D, "charts/linkerd-control-plane/values.yaml"),
    how="options.MergeValues over the linkerd-control-plane chart (cli/cmd/install.go:40, 273; pkg/charts/linkerd2/values.go:23); "
        "`install --crds` renders linkerd-crds instead (cli/cmd/install.go:39, 471)")
lk["commands"]["viz install"]["set_value_paths"] = dict(top_keys(L5D, "viz/charts/linkerd-viz/values.yaml"),
    how="options.MergeValues over the linkerd-viz chart (viz/cmd/install.go:101; viz/cmd/root.go:33 VizChartName)")

# resource types: both commands resolve TYPE through k8s.CanonicalResourceNameFromFriendlyName
k8s = show(L5D[0], L5D[2], "pkg/k8s/k8s.go")
rn_start = k8s.index("var resourceNames")
names = [list(t) for t in re.findall(r'\{"([\w]+)", "([\w]+)", "([\w]+)"\}', k8s[rn_start:k8s.index("}\n", rn_start) + 2])]
rn_line = k8s.count("\n", 0, rn_start) + 1
resolver = {"accepted_names": names, "cite": f"pkg/k8s/k8s.go:{rn_line}",
            "resolver": "viz/pkg/util/util.go buildResource -> k8s.CanonicalResourceNameFromFriendlyName (pkg/k8s/k8s.go:163)",
            "rollout": "not accepted: no 'rollout'/'rollouts' entry in resourceNames, so the CLI fails with "
                       "\"cannot find Kubernetes canonical name from friendly name [rollout]\" (pkg/k8s/k8s.go:169)"}
lk["commands"]["viz stat"]["resource_types"] = dict(resolver,
    documented="cronjobs daemonsets deployments namespaces jobs pods replicasets replicationcontrollers statefulsets authorities "
               "authorizationpolicies httproutes services servers serverauthorizations all (viz/cmd/stat.go NewCmdStat Long)")
lk["commands"]["viz edges"]["resource_types"] = dict(resolver,
    documented="cronjobs daemonsets deployments jobs pods replicasets replicationcontrollers statefulsets (viz/cmd/edges.go NewCmdEdges Long)",
    rejected="authority, service, all (viz/cmd/edges.go validateEdgesRequestInputs); a TYPE/NAME is rejected too",
    args="exactly one RESOURCETYPE (cobra.ExactArgs(1))")

def struct_tags(repo, path, struct):
    text = show(repo[0], repo[2], path)
    m = re.search(r"^type %s struct \{\n(.*?)^\}" % struct, text, re.M | re.S)
    out = []
    for fm in re.finditer(r'^\s*(\w+)\s+(\S+)\s+`json:"([^"]+)"`', m.group(1), re.M):
        tag = fm.group(3).split(",")
        out.append({"field": tag[0], "go_type": fm.group(2), "omitempty": "omitempty" in tag[1:],
                    "cite": f"{path}:{text.count(chr(10), 0, m.start(1) + fm.start(3)) + 1}"})
    return out

lk["json_output"] = {
    "viz edges -o json": {
        "shape": "a JSON array (an empty result prints []) of objects, json.MarshalIndent with two-space indent",
        "fields": struct_tags(L5D, "viz/cmd/edges.go", "edgesJSONStats"),
        "printer": "viz/cmd/edges.go printEdgesJSON",
        "notes": ["client_id and server_id keep only the first two dot-separated labels of the proxy identity "
                  "(<serviceaccount>.<namespace>) (viz/cmd/edges.go writeEdgesToBuffer)",
                  "no_tls_reason is the empty string when the edge is mTLS'd: the table's check mark is not used for json "
                  "(viz/cmd/edges.go writeEdgesToBuffer)",
                  "src/dst are resource names, src_namespace/dst_namespace their namespaces",
                  "entries are sorted by src_namespace+dst_namespace+src+dst (viz/cmd/edges.go writeEdgesToBuffer); "
                  "with no edges json prints [] and exits 0, where table/wide print \"No edges found.\" on stderr"]},
    "viz stat -o json": {
        "shape": "a JSON array (an empty result prints []) of objects, one per resource, grouped in k8s.AllResources order, each group sorted by \"namespace/name\" (viz/cmd/stat.go sortStatsKeys)",
        "fields": struct_tags(L5D, "viz/cmd/stat.go", "jsonStats"),
        "printer": "viz/cmd/stat.go printStatJSON",
        "notes": ["success, rps and latency_ms_p50/p95/p99 are JSON null when the resource has no request data (pointers left nil)",
                  "success is a fraction success/(success+failure) in [0,1], 0 when there were no requests "
                  "(viz/cmd/routes.go getSuccessRate); rps is (success+failure)/time-window seconds (getRequestRate)",
                  "kind is the canonical singular resource type (e.g. deployment); name carries no type prefix",
                  "meshed is declared but printStatJSON never assigns it, so it is always omitted",
                  "a pod-owning resource with no meshed pods is left out unless --unmeshed (or --from) is given "
                  "(viz/cmd/stat.go writeStatsToBuffer)",
                  "tcp_open_connections, tcp_read_bytes_rate, tcp_write_bytes_rate appear (with request data) for every "
                  "resource type except serverauthorization, authorizationpolicy and httproute (viz/cmd/stat.go showTCPConns)"]},
}

out = {"kind": kind, "kind_config_v1alpha4": kind_config, "helm": helm, "linkerd": lk}
json.dump(out, sys.stdout, indent=2)
print()
