"""Turn a CustomResourceDefinition's openAPIV3Schema into a JSON Schema for check-jsonschema.

    python tests/schemas/crd_to_jsonschema.py CRD.yaml v1alpha2 > tests/schemas/X.json

What changes, and why (tests/schemas/README.md says the same):

* `description`, `default` and the `x-kubernetes-*` list/map markers are dropped: they
  document, default or steer merges; they accept or reject nothing.
* `x-kubernetes-validations` (CEL rules) are dropped: no offline validator evaluates them.
  The JobSet rules are immutability (`self == oldSelf`) and one mutual exclusion that the
  manifests do not come near (startupPolicy with dependsOn); tests/schemas/README.md lists
  the PodMonitoring ones.
* `format: duration` is dropped: Kubernetes means a Go duration ("30s"), JSON Schema an ISO
  8601 one ("PT30S"), so a validator that checks the format would reject valid objects.
* Every object with `properties` (and without `x-kubernetes-preserve-unknown-fields`) gets
  `additionalProperties: false`: an unknown field is an error, as it is for
  `kubectl apply`, whose default `--validate=strict` asks the API server to reject unknown
  fields instead of pruning them.
* The document gets `apiVersion` and `kind` constants, which the API server enforces by
  the URL the object is sent to.

Everything else (types, enums, patterns, bounds, `anyOf` of int-or-string, `required`) is
kept as the CRD has it.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import yaml

DROPPED = {
    "description",
    "default",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-int-or-string",
}


def convert(node: Any) -> Any:
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROPPED or (key == "format" and value == "duration"):
            continue
        if key == "properties":
            out[key] = {name: convert(sub) for name, sub in value.items()}
        else:
            out[key] = convert(value)
    preserve = out.pop("x-kubernetes-preserve-unknown-fields", False)
    if "properties" in out and "additionalProperties" not in out and not preserve:
        out["additionalProperties"] = False
    return out


def crd_schema(crd: dict[str, Any], version: str) -> dict[str, Any]:
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version]
    schema = convert(served["schema"]["openAPIV3Schema"])
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schema["properties"]["apiVersion"] = {"const": f"{group}/{version}"}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind"})
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{kind} {group}/{version}",
        **schema,
    }


def main(argv: list[str]) -> None:
    path, version = argv
    with open(path) as f:
        crd = next(d for d in yaml.safe_load_all(f) if d)
    json.dump(crd_schema(crd, version), sys.stdout, indent=None, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
