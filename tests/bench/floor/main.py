"""A function's floor: a bare functions-framework function that imports the Google client(s) the
function uses (BENCH_FLOOR_CLIENTS: firestore, storage) and makes the same first call (one Firestore
read; a storage client), and nothing else of ours. `make bench` compares each function with its floor.
BENCH_FLOOR_OBJECTS ("<object>@<generation>;..."): the same bucket reads too, at those generations
(the predict function's floor reads a model's two files, as its first prediction does)."""

import os

import functions_framework

CLIENTS = set(filter(None, os.environ.get("BENCH_FLOOR_CLIENTS", "").split(",")))
OBJECTS = [o.rsplit("@", 1) for o in filter(None, os.environ.get("BENCH_FLOOR_OBJECTS", "").split(";"))]
if "firestore" in CLIENTS:
    from google.cloud import firestore
if "storage" in CLIENTS:
    from google.cloud import storage

_made: dict[str, object] = {}


def first_call() -> None:
    """One Firestore document read (a miss costs the same round trip), one storage client."""
    if "firestore" in CLIENTS:
        db = _made.setdefault("firestore", firestore.Client(project=os.environ.get("MLLAB_PROJECT")))
        db.collection("floor").document("probe").get()
    if "storage" in CLIENTS and "storage" not in _made:  # anonymous on the emulator, as mllab's clients are
        from google.auth.credentials import AnonymousCredentials

        anonymous = {"credentials": AnonymousCredentials()} if os.environ.get("STORAGE_EMULATOR_HOST") else {}
        _made["storage"] = storage.Client(project=os.environ.get("MLLAB_PROJECT"), **anonymous)
    if OBJECTS and "read" not in _made:  # once, as the predict function caches the model it read
        bucket = _made["storage"].bucket(os.environ["MLLAB_BUCKET"])
        _made["read"] = [bucket.blob(name, generation=int(gen)).download_as_bytes() for name, gen in OBJECTS]


@functions_framework.http
def floor_http(request):
    first_call()
    return "ok"


@functions_framework.cloud_event
def floor_event(cloud_event):
    first_call()


@functions_framework.http
def floor_transaction(request):
    """A bare read-modify-write transaction behind a bare function (BENCH_FLOOR_CLIENTS=firestore): what
    a warm POST /auth/refresh is compared with when the HTTP hop is counted on both sides."""
    db = _made.setdefault("firestore", firestore.Client(project=os.environ.get("MLLAB_PROJECT")))
    ref = db.collection("floor").document(f"tx-{os.getpid()}")

    @firestore.transactional
    def bump(tx):
        snap = ref.get(transaction=tx)
        tx.set(ref, {"n": (snap.get("n") if snap.exists else 0) + 1})

    bump(db.transaction())
    return "ok"
