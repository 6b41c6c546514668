#!/usr/bin/env python3
"""Offline checks of rendered Kubernetes manifests (output of `kustomize build`), run by validate.sh.

1. Schemas, strict (unknown fields are errors, as with kubeconform -strict):
   - built-in kinds: the Kubernetes OpenAPI-derived JSON schemas shipped in the `kubernetes-validate`
     package (PyPI), `-strict` variant, for every --k8s-version;
   - ServiceMonitor: JSON schema of cloudcoil's pydantic models of the prometheus-operator CRD
     (PyPI `cloudcoil-models-prometheus-operator`), made strict the way kubeconform does it;
   - CloudNativePG Cluster: deploy/schemas/cnpg-cluster-v1.json, a hand-written partial schema (no
     registry here ships that CRD; see its $comment).
   A kind without a schema is an error, never a skip.
2. Consistency a schema cannot see: every referenced ConfigMap/Secret/PVC/ServiceAccount (and key)
   exists or is declared --external; Services, PDBs, NetworkPolicies and ServiceMonitors select
   existing pods/services and named ports; $(VAR) references resolve; every container has resource
   requests and a memory limit and no privilege escalation; memalpha's own pods run as non-root;
   images are pinned (no :latest, no missing tag).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

HERE = Path(__file__).resolve().parent
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}


def load_docs(paths: list[str]) -> list[dict]:
    docs = []
    for path in paths:
        with open(path, encoding="utf-8") as fh:
            docs.extend(d for d in yaml.safe_load_all(fh) if d)
    return docs


def ref(doc: dict) -> str:
    return f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"


# ---------------------------------------------------------------------------------------------- schemas


def strictify(schema):
    """Forbid unknown properties in every object schema that lists properties (kubeconform -strict)."""
    if isinstance(schema, dict):
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        for value in schema.values():
            strictify(value)
    elif isinstance(schema, list):
        for value in schema:
            strictify(value)
    return schema


def servicemonitor_schema() -> dict:
    from cloudcoil.models.prometheus_operator import v1

    return strictify(v1.ServiceMonitor.model_json_schema(by_alias=True, mode="validation"))


def crd_validators() -> dict[tuple[str, str], tuple[str, jsonschema.protocols.Validator]]:
    cnpg = json.loads((HERE / "schemas" / "cnpg-cluster-v1.json").read_text())
    return {
        ("monitoring.coreos.com/v1", "ServiceMonitor"): (
            "cloudcoil-models-prometheus-operator (strict)",
            jsonschema.Draft202012Validator(servicemonitor_schema()),
        ),
        ("postgresql.cnpg.io/v1", "Cluster"): (
            "deploy/schemas/cnpg-cluster-v1.json (hand-written, partial)",
            jsonschema.Draft202012Validator(cnpg),
        ),
    }


def check_schemas(docs: list[dict], versions: list[str], errors: list[str]) -> dict[str, int]:
    from kubernetes_validate import utils as kv

    crds = crd_validators()
    counts: dict[str, int] = {}
    for doc in docs:
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key in crds:
            source, validator = crds[key]
            problems = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
            for problem in problems:
                path = ".".join(str(p) for p in problem.path)
                errors.append(f"{ref(doc)}: {path}: {problem.message} [{source}]")
            counts[source] = counts.get(source, 0) + 1
            continue
        for version in versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                errors.append(f"{ref(doc)}: {path}: {exc.message} [kubernetes {version}, strict]")
            except kv.SchemaNotFoundError:
                errors.append(
                    f"{ref(doc)}: no schema for {key[0]} {key[1]} (neither built-in nor a known CRD)"
                )
                break
        else:
            label = f"kubernetes {', '.join(versions)} (strict)"
            counts[label] = counts.get(label, 0) + 1
    return counts


# ---------------------------------------------------------------------------------------------- consistency


def pod_templates(doc: dict) -> list[dict]:
    kind = doc.get("kind")
    if kind == "CronJob":
        return [doc["spec"]["jobTemplate"]["spec"]["template"]]
    if kind in WORKLOAD_KINDS:
        return [doc["spec"]["template"]]
    return []


def selector_matches(selector: dict, labels: dict) -> bool:
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def check_consistency(docs: list[dict], externals: set[str], errors: list[str]) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc

    def exists(kind: str, name: str, where: str) -> dict | None:
        if name in by_kind.get(kind, {}):
            return by_kind[kind][name]
        if f"{kind}/{name}" not in externals:
            errors.append(
                f"{where}: references {kind}/{name}, which is neither rendered nor declared --external"
            )
        return None

    def data_keys(doc: dict) -> set[str]:
        return set((doc.get("data") or {}).keys()) | set((doc.get("stringData") or {}).keys())

    # Pods: what they are labelled, which ports they name. CNPG Clusters produce pods labelled
    # cnpg.io/cluster=<name> serving 5432.
    pods: list[tuple[str, dict, set[str]]] = []
    for doc in docs:
        for tmpl in pod_templates(doc):
            ports = {
                p.get("name") for c in tmpl["spec"].get("containers", []) for p in c.get("ports", []) or []
            }
            pods.append((ref(doc), tmpl.get("metadata", {}).get("labels", {}) or {}, ports))
    for name in by_kind.get("Cluster", {}):
        pods.append((f"Cluster/{name}", {"cnpg.io/cluster": name}, {"postgresql"}))

    def matching_pods(selector: dict) -> list[tuple[str, dict, set[str]]]:
        return [p for p in pods if selector_matches(selector, p[1])]

    for doc in docs:
        where = ref(doc)
        for tmpl in pod_templates(doc):
            spec = tmpl["spec"]
            if spec.get("serviceAccountName"):
                exists("ServiceAccount", spec["serviceAccountName"], where)
            for vol in spec.get("volumes", []) or []:
                if "persistentVolumeClaim" in vol:
                    exists("PersistentVolumeClaim", vol["persistentVolumeClaim"]["claimName"], where)
                if "configMap" in vol:
                    exists("ConfigMap", vol["configMap"]["name"], where)
                if "secret" in vol:
                    exists("Secret", vol["secret"]["secretName"], where)
            mounted = {v["name"] for v in spec.get("volumes", []) or []}
            for container in spec.get("containers", []) + (spec.get("initContainers") or []):
                cwhere = f"{where} container {container['name']}"
                for mount in container.get("volumeMounts", []) or []:
                    if mount["name"] not in mounted:
                        errors.append(f"{cwhere}: mounts undefined volume {mount['name']}")
                defined: set[str] = set()
                for source in container.get("envFrom", []) or []:
                    for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                        if key in source:
                            target = exists(kind, source[key]["name"], cwhere)
                            if target is not None:
                                defined |= data_keys(target)
                for var in container.get("env", []) or []:
                    for value in [var.get("value") or ""]:
                        for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                            if name not in defined:
                                errors.append(
                                    f"{cwhere}: env {var['name']} uses $({name}) before it is defined"
                                )
                    source = var.get("valueFrom") or {}
                    for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                        if key in source:
                            sel = source[key]
                            target = (
                                exists(kind, sel["name"], cwhere)
                                if not sel.get("optional")
                                else by_kind.get(kind, {}).get(sel["name"])
                            )
                            if (
                                target is not None
                                and not sel.get("optional")
                                and sel["key"] not in data_keys(target)
                            ):
                                errors.append(f"{cwhere}: {kind}/{sel['name']} has no key {sel['key']}")
                    defined.add(var["name"])
                for arg in (container.get("command") or []) + (container.get("args") or []):
                    for name in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", arg):
                        if name not in defined:
                            errors.append(f"{cwhere}: argument {arg!r} uses undefined $({name})")
                resources = container.get("resources") or {}
                if not resources.get("requests") or not (resources.get("limits") or {}).get("memory"):
                    errors.append(f"{cwhere}: needs resource requests and a memory limit")
                if (container.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False:
                    errors.append(f"{cwhere}: must set securityContext.allowPrivilegeEscalation: false")
                image = container.get("image", "")
                if "@sha256:" not in image and (
                    ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")
                ):
                    errors.append(f"{cwhere}: image {image!r} is not pinned to a tag or digest")
                if "memalpha" in image.rsplit("/", 1)[-1] and not (spec.get("securityContext") or {}).get(
                    "runAsNonRoot"
                ):
                    errors.append(f"{cwhere}: memalpha images run as non-root: set runAsNonRoot")

    for name, svc in by_kind.get("Service", {}).items():
        selector = {"matchLabels": svc["spec"].get("selector") or {}}
        matched = matching_pods(selector)
        if not matched:
            errors.append(f"Service/{name}: selector {selector['matchLabels']} matches no pod template")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort")
            if isinstance(target, str) and matched and not any(target in p[2] for p in matched):
                errors.append(
                    f"Service/{name}: targetPort {target!r} is not a named port of the selected pods"
                )

    for kind in ("PodDisruptionBudget",):
        for name, doc in by_kind.get(kind, {}).items():
            if not matching_pods(doc["spec"]["selector"]):
                errors.append(f"{kind}/{name}: selector matches no pod template")

    for name, hpa in by_kind.get("HorizontalPodAutoscaler", {}).items():
        target = hpa["spec"]["scaleTargetRef"]
        exists(target["kind"], target["name"], f"HorizontalPodAutoscaler/{name}")

    for name, pol in by_kind.get("NetworkPolicy", {}).items():
        where = f"NetworkPolicy/{name}"
        selector = pol["spec"].get("podSelector") or {}
        if selector and not matching_pods(selector):
            errors.append(f"{where}: podSelector matches no pod")
        for rule in pol["spec"].get("ingress", []) or []:
            for peer in rule.get("from", []) or []:
                if (
                    "podSelector" in peer
                    and "namespaceSelector" not in peer
                    and not matching_pods(peer["podSelector"])
                ):
                    errors.append(f"{where}: a 'from' podSelector matches no pod of this deployment")

    for name, mon in by_kind.get("ServiceMonitor", {}).items():
        services = [
            s
            for s in by_kind.get("Service", {}).values()
            if selector_matches(mon["spec"]["selector"], s["metadata"].get("labels", {}) or {})
        ]
        if not services:
            errors.append(f"ServiceMonitor/{name}: selector matches no Service")
        if len(services) > 1:
            errors.append(
                f"ServiceMonitor/{name}: selects {len(services)} Services, every series would be scraped twice"
            )
        for endpoint in mon["spec"].get("endpoints", []):
            if services and not any(
                endpoint.get("port") in {p.get("name") for p in s["spec"]["ports"]} for s in services
            ):
                errors.append(
                    f"ServiceMonitor/{name}: port {endpoint.get('port')!r} is not a named Service port"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", help="rendered manifests (multi-document YAML)")
    parser.add_argument("--k8s-version", action="append", required=True, help="e.g. 1.30.0 (repeatable)")
    parser.add_argument(
        "--external",
        action="append",
        default=[],
        help="KIND/NAME provided outside these manifests (e.g. Secret/memalpha-secrets)",
    )
    args = parser.parse_args()

    docs = load_docs(args.files)
    errors: list[str] = []
    counts = check_schemas(copy.deepcopy(docs), args.k8s_version, errors)
    check_consistency(docs, set(args.external), errors)
    for source, count in sorted(counts.items()):
        print(f"  schema  {count:3d} resources against {source}")
    if errors:
        for error in errors:
            print(f"  ERROR   {error}")
        print(f"  {len(errors)} problem(s) in {len(docs)} resources")
        return 1
    print(f"  ok      {len(docs)} resources: schemas strict, references and selectors consistent")
    return 0


if __name__ == "__main__":
    sys.exit(main())
