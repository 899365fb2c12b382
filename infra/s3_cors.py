"""Set an S3-compatible bucket's CORS rules through the S3 API (a deployment step: infra/deployment/).

    .venv/bin/python infra/s3_cors.py --endpoint=https://ACCOUNT.r2.cloudflarestorage.com --bucket=B \
        --region=auto --addressing=path --rules=build/deploy/P/s3-cors.json  < credentials.json

The rules file is the one the plan generated (mllab.files.s3.bucket_cors: the lab origin, the signed URLs'
methods and pinned headers). The token, {"access_key_id", "secret_access_key"} as the functions read it,
comes on stdin only (`make deploy` reads it from Secret Manager into memory), never as an argument, and
is never printed. The rules are read back after they are set: a store that ignored them fails the step.
Needs the `s3` extra (botocore), which `.venv` has.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infra/s3_cors.py", description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True, help="the S3 API endpoint, https://host[:port]")
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--region", default="auto")
    parser.add_argument("--addressing", choices=("path", "virtual"), default="path")
    parser.add_argument("--rules", required=True, type=Path, help="the CORS configuration (the S3 API's JSON)")
    return parser


def _comparable(rules: list[dict[str, Any]], keys: list[set[str]]) -> list[dict[str, Any]]:
    """The rules' values of the fields that were set (a store may add its own, e.g. an ID, and order lists)."""
    return [
        {key: sorted(value) if isinstance(value, list) else value for key, value in rule.items() if key in wanted}
        for rule, wanted in zip(rules, keys, strict=False)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from botocore.exceptions import BotoCoreError, ClientError

    from mllab.files import s3
    from mllab.platform.config import ConfigError

    rules = json.loads(args.rules.read_text())
    try:
        client = s3.store_client(args.endpoint, args.region, args.addressing, sys.stdin.read())
        client.put_bucket_cors(Bucket=args.bucket, CORSConfiguration=rules)
        stored = client.get_bucket_cors(Bucket=args.bucket)
    except ConfigError as exc:
        print(f"s3_cors: {exc} (on stdin)", file=sys.stderr)
        return 2
    except ClientError as exc:
        error = exc.response.get("Error", {})
        print(f"s3_cors: bucket {args.bucket}: {error.get('Code')}: {error.get('Message')}", file=sys.stderr)
        return 1
    except BotoCoreError as exc:
        print(f"s3_cors: {args.endpoint} did not answer: {type(exc).__name__}", file=sys.stderr)
        return 1
    keys = [set(rule) for rule in rules["CORSRules"]]
    reported = stored.get("CORSRules", [])
    if len(reported) != len(keys) or _comparable(reported, keys) != _comparable(rules["CORSRules"], keys):
        print(f"s3_cors: bucket {args.bucket} reports other CORS rules than were set", file=sys.stderr)
        return 1
    origins = sorted({o for rule in rules["CORSRules"] for o in rule["AllowedOrigins"]})
    methods = sorted({m for rule in rules["CORSRules"] for m in rule["AllowedMethods"]})
    print(f"CORS of bucket {args.bucket} set: {', '.join(origins)} may {', '.join(methods)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
