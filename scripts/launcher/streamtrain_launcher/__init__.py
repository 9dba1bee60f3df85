"""Submit a training Job to Kubernetes and follow it to the end (no TensorFlow imports).

The launcher renders the manifests in `k8s/` with kustomize (the same overlays users apply
with `kubectl apply -k`), submits the Job (or, with `--overlay jobset`, the JobSet), and with
`--wait` follows it until it completes or fails, streaming its pods' logs, explaining what a
Kueue-queued Job waits for, and exiting with the trainer's exit code.

    python scripts/launch.py --overlay gke --image REGISTRY/streamtrain/trainer:SHA \\
        --data gs://bucket/data --output gs://bucket/models/run1 --wait --timeout 6h

Modules: `exitcodes` (the launcher's exit codes), `options` (inputs, validation, names and
labels), `render` (kustomize), `kube` (API client and submission), `follow` (watching the Job),
`queueing` (Kueue Workloads), `cli` (flags and environment variables).
"""
