"""Shared fixtures: a real GCS emulator, buckets on it, and a fault-injecting proxy in front.

Fixtures:
  gcs_emulator      (session) base URL "http://127.0.0.1:PORT" of a gcp-storage-emulator
                    subprocess (in-memory); does NOT set STORAGE_EMULATOR_HOST.
  gcs_env           sets STORAGE_EMULATOR_HOST to the emulator for this test (monkeypatch);
                    yields the URL. Code under test creating a Storage/Client afterwards uses it.
  gcs_admin         a google.cloud.storage.Client bound to the emulator directly (for setup and
                    checks; not through any proxy).
  gcs_bucket        a fresh, uniquely named bucket on the emulator (implies gcs_env); yields the
                    bucket name.
  gcs_upload_tree   callable (local_dir, "gs://bucket/prefix") -> list of uploaded URIs; puts a
                    local folder tree under a prefix with the admin client.
  rendered          (session) {overlay or "rbac": Path} of every k8s/ rendering (kubectl kustomize).
  api, kubeconfig   the Kubernetes API test server (tests/kube_api_server.py) and a kubeconfig
                    file pointing the real client at it.
  fault_proxy       factory: fault_proxy(**FaultProxy options, set_env=False) starts a FaultProxy
                    in front of the emulator and closes it after the test; with set_env=True it
                    also points STORAGE_EMULATOR_HOST at the proxy.

    def test_read(gcs_bucket, gcs_upload_tree, fault_proxy, tmp_path):
        gcs_upload_tree(str(tmp_path), f"gs://{gcs_bucket}/data")
        proxy = fault_proxy(status_503=0.3, only_paths="alt=media", seed=0, set_env=True)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kube_api_server import KubeApiServer
from support.httpproxy import FaultProxy
from toolbox import render_all

from trainer.dev.emulator import EMULATOR_ENV, Emulator


@pytest.fixture(scope="session")
def gcs_emulator() -> Iterator[str]:
    """Start gcp-storage-emulator on a free port; yield its base URL; stop it at the end."""
    try:
        emulator = Emulator().start()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield emulator.url
    finally:
        emulator.stop()


@pytest.fixture
def gcs_env(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point STORAGE_EMULATOR_HOST at the emulator for this test only."""
    monkeypatch.setenv(EMULATOR_ENV, gcs_emulator)
    return gcs_emulator


@pytest.fixture
def gcs_admin(gcs_emulator: str) -> Iterator[Any]:
    """A google-cloud-storage client talking to the emulator directly (never via a proxy)."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="streamtrain-test",
        credentials=AnonymousCredentials(),
        client_options={"api_endpoint": gcs_emulator},
    )
    yield client
    client.close()


@pytest.fixture
def gcs_bucket(gcs_env: str, gcs_admin: Any) -> str:
    """A new bucket with a unique name on the emulator; yields its name."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    gcs_admin.create_bucket(name)
    return name


@pytest.fixture
def gcs_upload_tree(gcs_admin: Any) -> Callable[[str, str], list[str]]:
    """Return upload(local_dir, "gs://bucket/prefix") → sorted URIs of the uploaded objects."""

    def upload(local_dir: str, uri: str) -> list[str]:
        bucket_name, _, prefix = uri.removeprefix("gs://").partition("/")
        bucket = gcs_admin.bucket(bucket_name)
        root = Path(local_dir)
        uris = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = "/".join(
                part for part in (prefix.strip("/"), path.relative_to(root).as_posix()) if part
            )
            bucket.blob(key).upload_from_filename(str(path))
            uris.append(f"gs://{bucket_name}/{key}")
        return uris

    return upload


@pytest.fixture
def fault_proxy(
    gcs_emulator: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., FaultProxy]]:
    """Factory for FaultProxy instances in front of the emulator, closed after the test."""
    proxies: list[FaultProxy] = []

    def start(*, set_env: bool = False, upstreams: list[str] | None = None, **options: Any):
        proxy = FaultProxy(upstreams=upstreams or [gcs_emulator], **options).start()
        proxies.append(proxy)
        if set_env:
            monkeypatch.setenv(EMULATOR_ENV, proxy.url)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """What users apply: every overlay and k8s/rbac (k8s/namespace is a part of both)."""
    return render_all(tmp_path_factory.mktemp("rendered"))


@pytest.fixture
def api() -> Iterator[KubeApiServer]:
    with KubeApiServer() as server:
        yield server


@pytest.fixture
def kubeconfig(api: KubeApiServer, tmp_path: Path) -> Path:
    return api.write_kubeconfig(tmp_path / "kubeconfig")
