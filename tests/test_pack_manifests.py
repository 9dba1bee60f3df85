"""k8s/pack: the Indexed Job that runs `trainer pack` renders, and its command is one we parse."""

from __future__ import annotations

import re

from toolbox import ROOT, by_kind, docs_of, kustomize

from trainer.cli import make_parser
from trainer.pack.command import pack_config


def _rendered() -> tuple[dict, dict]:
    docs = docs_of(kustomize(ROOT / "k8s" / "pack"))
    (job,) = by_kind(docs, "Job")
    (params,) = [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("pack")]
    return job, params


def test_indexed_job_with_one_part_per_completion():
    job, _ = _rendered()
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    (container,) = spec["template"]["spec"]["containers"]
    parts = [int(a.split("=", 1)[1]) for a in container["args"] if a.startswith("--parts=")]
    assert parts == [spec["completions"]] == [spec["parallelism"]]
    assert "--part" not in " ".join(container["args"]).replace("--parts", "")  # from the index
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["values"] == [2]
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"]["containerName"] == container["name"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_rendered_command_is_valid_for_each_index():
    job, params = _rendered()
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    values = {}
    for name, e in env.items():
        ref = e.get("valueFrom", {}).get("configMapKeyRef")
        if ref:
            assert ref["name"] == params["metadata"]["name"]  # the generated name, hash included
            values[name] = params["data"][ref["key"]]
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in container["args"]]
    namespace = make_parser().parse_args(args)
    assert namespace.command == "pack"
    last = job["spec"]["completions"] - 1
    cfg = pack_config(namespace, {"JOB_COMPLETION_INDEX": str(last)})
    assert (cfg.part, cfg.parts) == (last, job["spec"]["completions"])
    assert cfg.source.startswith("gs://") and cfg.output.startswith("gs://")
    assert cfg.max_side == int(values["MAX_SIDE"]) and cfg.merge
