"""A function's floor: a bare functions-framework function that imports the Google client(s) the
function uses (BENCH_FLOOR_CLIENTS: firestore, storage) and makes the same first call (one Firestore
read; a storage client), and nothing else of ours. `make bench` compares each function with its floor."""

import os

import functions_framework

CLIENTS = set(filter(None, os.environ.get("BENCH_FLOOR_CLIENTS", "").split(",")))
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


@functions_framework.http
def floor_http(request):
    first_call()
    return "ok"


@functions_framework.cloud_event
def floor_event(cloud_event):
    first_call()
