"""Dataset discovery over local folders and gs:// (the emulator), manifests, split, saved index."""

import json

import keras
import numpy as np
import pytest

from trainer.data.index import DatasetIndex, discover, load_or_discover
from trainer.data.storage import Storage
from trainer.dev.synthetic import write_learnable_dataset
from trainer.errors import DataError, StorageNotFoundError


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    write_learnable_dataset(str(root), classes=3, per_class=6, seed=1)
    # Names that sort differently under naive rules: uppercase before lowercase, digits first.
    for extra in ("Zebra", "10_apples"):
        (root / extra).mkdir()
        (root / extra / "a.jpg").write_bytes((root / "circle" / "circle_0000.jpg").read_bytes())
    (root / ".hidden").mkdir()
    (root / ".hidden" / "x.jpg").write_bytes(b"ignored")
    (root / "README.txt").write_text("not an image, not a class")
    return root


def test_class_order_and_labels_match_keras(folder):
    index = discover(str(folder), storage=Storage())
    ds = keras.utils.image_dataset_from_directory(
        str(folder), image_size=(8, 8), batch_size=1000, shuffle=False
    )
    assert list(index.class_names) == ds.class_names
    keras_labels = np.concatenate([y.numpy() for _, y in ds])
    assert list(index.labels) == keras_labels.tolist()
    assert [p.rsplit("/", 2)[-2:] for p in index.uris] == [
        p.rsplit("/", 2)[-2:] for p in ds.file_paths
    ]


def test_gcs_listing_matches_local(folder, gcs_bucket, gcs_upload_tree):
    gcs_upload_tree(str(folder), f"gs://{gcs_bucket}/data")
    storage = Storage()
    local = discover(str(folder), storage=storage)
    remote = discover(f"gs://{gcs_bucket}/data", storage=storage)
    assert remote.class_names == local.class_names
    assert remote.labels == local.labels
    assert [u.split("/data/", 1)[1] for u in remote.uris] == [
        u.split(str(folder) + "/", 1)[1] for u in local.uris
    ]
    with open(local.uris[0], "rb") as f:
        assert storage.read(remote.uris[0]) == f.read()


def test_manifest_csv_and_jsonl(tmp_path, gcs_bucket, gcs_upload_tree, folder):
    storage = Storage()
    rows = [
        ("circle/circle_0000.jpg", "round"),
        ("square/square_0001.png", "boxy"),
        ("circle/circle_0002.jpg", "round"),
    ]
    csv_text = "uri,label\n" + "".join(f"{u},{label}\n" for u, label in rows)
    jsonl_text = "".join(json.dumps({"uri": u, "label": label}) + "\n" for u, label in rows)
    gcs_upload_tree(str(folder), f"gs://{gcs_bucket}/m")
    storage.write(f"gs://{gcs_bucket}/m/list.csv", csv_text.encode())
    storage.write(f"gs://{gcs_bucket}/m/list.jsonl", jsonl_text.encode())
    a = discover(f"gs://{gcs_bucket}/m/list.csv", storage=storage)
    b = discover(f"gs://{gcs_bucket}/m/list.jsonl", storage=storage)
    assert a == b or (a.uris, a.labels, a.class_names) == (b.uris, b.labels, b.class_names)
    assert a.class_names == ("boxy", "round")
    assert a.uris[0] == f"gs://{gcs_bucket}/m/circle/circle_0000.jpg"
    assert a.labels == (1, 1, 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("uri,label\na.jpg\n", r"list.csv:2: expected 'uri,label'"),
        ("a.jpg,x\nb.jpg,x,extra\n", r"list.csv:2: expected"),
        ("a.jpg,x\na.jpg,y\n", r"list.csv:2: duplicate uri a.jpg"),
    ],
)
def test_bad_manifest_lines_are_named(tmp_path, text, message):
    (tmp_path / "list.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        discover(str(tmp_path / "list.csv"), storage=Storage())


def test_bad_jsonl_and_unknown_label(tmp_path):
    (tmp_path / "l.jsonl").write_text('{"uri": "a.jpg", "label": "x"}\nnot json\n')
    with pytest.raises(DataError, match=r"l.jsonl:2: expected a JSON object"):
        discover(str(tmp_path / "l.jsonl"), storage=Storage())
    (tmp_path / "m.jsonl").write_text(
        '{"uri": "a.jpg", "label": "x"}\n{"uri": "b", "label": "q"}\n'
    )
    with pytest.raises(DataError, match=r"m.jsonl:2: label 'q' is not one of the classes"):
        discover(str(tmp_path / "m.jsonl"), storage=Storage(), class_names=["x", "y"])


def test_errors_nothing_found_single_class_missing(tmp_path, gcs_bucket):
    storage = Storage()
    (tmp_path / "only" / "cat").mkdir(parents=True)
    (tmp_path / "only" / "cat" / "a.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="only one class"):
        discover(str(tmp_path / "only"), storage=storage)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match="no images found"):
        discover(str(tmp_path / "empty"), storage=storage)
    with pytest.raises(StorageNotFoundError, match="no such directory"):
        discover(str(tmp_path / "missing"), storage=storage)
    with pytest.raises(StorageNotFoundError, match="no objects under this prefix"):
        discover(f"gs://{gcs_bucket}/nothing-here", storage=storage)
    with pytest.raises(StorageNotFoundError, match="does-not-exist-bucket"):
        discover("gs://does-not-exist-bucket/x", storage=storage)


def test_split_is_stratified_deterministic_and_disjoint(folder):
    index = discover(str(folder), storage=Storage())
    train, val = index.split(val_split=0.34, seed=3)
    again = index.split(val_split=0.34, seed=3)
    assert (train, val) == again
    assert set(train.uris).isdisjoint(val.uris)
    assert sorted(train.uris + val.uris) == sorted(index.uris)
    for name, n in val.class_counts().items():
        assert n == round(index.class_counts()[name] * 0.34)
    assert index.split(val_split=0.34, seed=4)[1] != val


def test_index_round_trip_and_listed_once(folder, tmp_path, gcs_bucket):
    storage = Storage()
    uri = f"gs://{gcs_bucket}/index.json"
    first = load_or_discover(str(folder), storage=storage, index_uri=uri)
    (folder / "circle" / "late.jpg").write_bytes(b"added after indexing")
    second = load_or_discover(str(folder), storage=storage, index_uri=uri)
    assert second == first  # loaded, not listed again
    assert DatasetIndex.from_json(first.to_json()).fingerprint() == first.fingerprint()
    (folder / "circle" / "late.jpg").unlink()
    doc = json.loads(storage.read(uri))
    doc["labels"][0] = 2
    storage.write(uri, json.dumps(doc).encode())
    with pytest.raises(DataError, match="fingerprint mismatch"):
        load_or_discover(str(folder), storage=storage, index_uri=uri)
