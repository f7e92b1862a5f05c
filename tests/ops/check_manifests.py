#!/usr/bin/python3
"""Checks the deployment manifests as far as no cluster is needed (ctest: ops_manifests):
every YAML document of deploy/k8s and the Compose files parses; selectors match their pod labels;
Services, the HPA, Secrets and volumes refer to what exists; every flag the manifests and the
Compose file pass to bitsweep-coordinator / bitsweep-worker is one that binary accepts (from its
--helpfull); kustomize renders deploy/k8s when kubectl is installed.

  check_manifests.py SOURCE_DIR COORDINATOR_BINARY WORKER_BINARY
"""
import os
import re
import shutil
import subprocess
import sys

import yaml

failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def binary_flags(binary):
    out = subprocess.run([binary, "--helpfull"], capture_output=True, text=True).stdout
    return set(re.findall(r"^\s+--([a-z0-9_]+)", out, re.M))


def check_args(args, flags, where):
    binary = args[0]
    for arg in args[1:]:
        if not arg.startswith("--"):
            continue
        name = arg[2:].split("=", 1)[0].replace("-", "_")
        check(name in flags[binary], f"{where}: {binary} has no flag --{name}")


def main():
    source, coordinator, worker = sys.argv[1:4]
    flags = {"bitsweep-coordinator": binary_flags(coordinator),
             "bitsweep-worker": binary_flags(worker)}
    check(len(flags["bitsweep-coordinator"]) > 10, "cannot read bitsweep-coordinator --helpfull")

    # Compose: the commands of coordinator and worker.
    with open(os.path.join(source, "deploy/docker-compose.yml")) as f:
        compose = yaml.safe_load(f)
    for name in ("coordinator", "worker"):
        command = [re.sub(r"\$\{[^}]*:-([^}]*)\}", r"\1", c)
                   for c in compose["services"][name]["command"]]
        check_args(command, flags, f"docker-compose.yml {name}")
    with open(os.path.join(source, "deploy/docker-stack.yml")) as f:
        stack = yaml.safe_load(f)
    check(set(stack["services"]) <= set(compose["services"]), "docker-stack.yml: unknown service")

    # Kubernetes.
    docs = []
    k8s = os.path.join(source, "deploy/k8s")
    for name in sorted(os.listdir(k8s)):
        if name.endswith(".yaml") and name != "kustomization.yaml":
            with open(os.path.join(k8s, name)) as f:
                docs += [(name, d) for d in yaml.safe_load_all(f) if d]
    by_kind = {}
    for name, d in docs:
        check("apiVersion" in d and "kind" in d and "name" in d.get("metadata", {}),
              f"{name}: a document without apiVersion, kind or metadata.name")
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    workloads = {**by_kind.get("StatefulSet", {}), **by_kind.get("Deployment", {})}
    check(set(workloads) == {"coordinator", "worker"}, f"workloads: {sorted(workloads)}")
    for wname, w in workloads.items():
        spec = w["spec"]
        labels = spec["template"]["metadata"]["labels"]
        selector = spec["selector"]["matchLabels"]
        check(all(labels.get(k) == v for k, v in selector.items()),
              f"{wname}: selector {selector} does not match the pod labels {labels}")
        pod = spec["template"]["spec"]
        volumes = {v["name"] for v in pod.get("volumes", [])}
        volumes |= {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
        for c in pod["containers"]:
            check_args(c["args"], flags, f"k8s {wname}")
            for m in c.get("volumeMounts", []):
                check(m["name"] in volumes, f"{wname}: mount of unknown volume {m['name']}")
            ports = {p["containerPort"] for p in c.get("ports", [])}
            annotated = spec["template"]["metadata"].get("annotations", {})
            check(int(annotated.get("prometheus.io/port", 0)) in ports,
                  f"{wname}: prometheus.io/port is not a container port")
        for v in pod.get("volumes", []):
            if "secret" in v:
                check(v["secret"]["secretName"] == "bitsweep-token", f"{wname}: secret name")
    for sname, s in by_kind.get("Service", {}).items():
        target = workloads.get(sname)
        check(target is not None, f"Service {sname} has no workload of that name")
        if target:
            labels = target["spec"]["template"]["metadata"]["labels"]
            check(all(labels.get(k) == v for k, v in s["spec"]["selector"].items()),
                  f"Service {sname} selects no pod of {sname}")
            named = {p["name"] for c in target["spec"]["template"]["spec"]["containers"]
                     for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                check(p["targetPort"] in named, f"Service {sname}: unknown targetPort")
    for hname, h in by_kind.get("HorizontalPodAutoscaler", {}).items():
        check(h["spec"]["scaleTargetRef"]["name"] in by_kind.get("Deployment", {}),
              f"HPA {hname} scales an unknown Deployment")
    # The worker reaches the coordinator through its Service.
    worker_args = workloads["worker"]["spec"]["template"]["spec"]["containers"][0]["args"]
    check("--coordinator=coordinator:50051" in worker_args, "worker: coordinator address")

    with open(os.path.join(k8s, "kustomization.yaml")) as f:
        kustomization = yaml.safe_load(f)
    for r in kustomization["resources"]:
        check(os.path.exists(os.path.join(k8s, r)), f"kustomization: missing {r}")
    for g in kustomization.get("configMapGenerator", []):
        for entry in g["files"]:
            check(os.path.exists(os.path.join(k8s, entry.split("=", 1)[-1])),
                  f"kustomization: missing {entry}")
    kubectl = shutil.which("kubectl")
    if kubectl:
        rendered = subprocess.run([kubectl, "kustomize", "--load-restrictor",
                                   "LoadRestrictionsNone", k8s], capture_output=True, text=True)
        check(rendered.returncode == 0, f"kubectl kustomize: {rendered.stderr}")
        kinds = re.findall(r"^kind: (\w+)", rendered.stdout, re.M)
        check(len(kinds) == len(docs) + 2, f"kustomize rendered {kinds}")
    else:
        print("check_manifests: kubectl not installed, kustomize rendering not checked")

    for message in failures:
        print("FAIL:", message)
    print(f"check_manifests: {len(docs)} Kubernetes objects, {len(failures)} problems")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
