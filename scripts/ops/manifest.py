"""The backup manifest of scripts/ops/backup-mlflow.sh: written by it, read by restore-mlflow.sh.

Standard library only, so it runs with any python3 on the database host::

    python3 scripts/ops/manifest.py write OUT --postgres-uri URI ... --database ROLE NAME ...
    python3 scripts/ops/manifest.py dumps MANIFEST         # role, database, file, sha256 per line
    python3 scripts/ops/manifest.py get MANIFEST mlflow_version
    python3 scripts/ops/manifest.py summary MANIFEST      # key tables' row counts
    python3 scripts/ops/manifest.py compare MANIFEST ROLE COUNTS_JSON
    python3 scripts/ops/manifest.py record STATE_DIR/server.json artifacts_destination

Errors go to stderr as one ``error: ...`` line with exit status 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

FORMAT_VERSION = 1
ROLES = ("tracking", "auth")
#: The tables an operator checks first, in the order they are summarised.
KEY_TABLES = {
    "tracking": (
        "experiments",
        "runs",
        "params",
        "metrics",
        "latest_metrics",
        "registered_models",
        "model_versions",
        "registered_model_aliases",
    ),
    "auth": ("users", "roles", "role_permissions", "user_role_assignments"),
}


class ManifestError(Exception):
    """The manifest is missing, unreadable or does not describe this backup."""


def artifacts_section(destination: str, s3_endpoint: str) -> dict[str, Any]:
    """Where the artifacts live and how to copy them: they are not in the database dumps."""
    if destination.startswith("s3://"):
        endpoint = f" --endpoint-url {s3_endpoint}" if s3_endpoint else ""
        copy = f"aws s3 sync{endpoint} {destination} BACKUP_DIR/artifacts"
        back = f"aws s3 sync{endpoint} BACKUP_DIR/artifacts {destination}"
    else:
        copy = f"rsync -a {destination}/ BACKUP_DIR/artifacts/"
        back = f"rsync -a BACKUP_DIR/artifacts/ {destination}/"
    return {
        "included": False,
        "destination": destination,
        "note": "Run artifacts and model files live in the artifact store, not in PostgreSQL: "
        "this backup does not contain them. Copy them separately (versioned buckets help).",
        "backup_command": copy,
        "restore_command": back,
    }


def source_section(postgres_uri: str, server_version: str) -> dict[str, Any]:
    # Host, port and user only: the manifest never holds the password.
    parts = urlsplit(postgres_uri)
    return {
        "host": parts.hostname or "(local socket)",
        "port": parts.port or 5432,
        "user": parts.username,
        "postgres_server_version": server_version,
    }


def write(args: argparse.Namespace) -> None:
    databases = {}
    for role, name, file, sha256, revision, counts in args.database:
        if role not in ROLES:
            raise ManifestError(f"unknown database role {role!r}; expected one of {ROLES}")
        databases[role] = {
            "name": name,
            "file": file,
            "sha256": sha256,
            "alembic_revision": revision,
            "row_counts": json.loads(counts),
        }
    manifest = {
        "format_version": FORMAT_VERSION,
        "created_at": args.created_at,
        "source": source_section(args.postgres_uri, args.server_version),
        "pg_dump_version": args.pg_dump_version,
        "mlflow_version": args.mlflow_version,
        "databases": databases,
        "artifacts": artifacts_section(args.artifacts_destination, args.s3_endpoint),
    }
    Path(args.out).write_text(json.dumps(manifest, indent=2) + "\n")


def load(path: str) -> dict[str, Any]:
    try:
        manifest = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ManifestError(
            f"{path} not found: is this a folder made by backup-mlflow.sh?"
        ) from None
    except (OSError, ValueError) as error:
        raise ManifestError(f"cannot read {path}: {error}") from error
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{path} has format_version {manifest.get('format_version')!r}; "
            f"this script reads {FORMAT_VERSION}"
        )
    for role in ROLES:
        entry = manifest.get("databases", {}).get(role)
        if not entry:
            raise ManifestError(f"{path} lists no {role} database")
        if Path(entry["file"]).name != entry["file"]:
            raise ManifestError(f"{path}: dump file {entry['file']!r} is not a plain file name")
    return manifest


def dumps(args: argparse.Namespace) -> None:
    manifest = load(args.manifest)
    for role in ROLES:
        entry = manifest["databases"][role]
        print("\t".join((role, entry["name"], entry["file"], entry["sha256"])))


def get(args: argparse.Namespace) -> None:
    value: Any = load(args.manifest)
    for key in args.key.split("."):
        if not isinstance(value, dict) or key not in value:
            raise ManifestError(f"{args.manifest} has no {args.key}")
        value = value[key]
    print(value if isinstance(value, str) else json.dumps(value))


def summary(args: argparse.Namespace) -> None:
    """One line per database with the row counts of its key tables."""
    manifest = load(args.manifest)
    for role in ROLES:
        counts = manifest["databases"][role]["row_counts"]
        tables = ", ".join(
            f"{table} {counts[f'public.{table}']}"
            for table in KEY_TABLES[role]
            if f"public.{table}" in counts
        )
        entry = manifest["databases"][role]
        print(f"{role} {entry['name']} (alembic {entry['alembic_revision']}): {tables}")


def compare(args: argparse.Namespace) -> None:
    """Exit 1 listing every table whose restored row count differs from the manifest's."""
    expected: dict[str, int] = load(args.manifest)["databases"][args.role]["row_counts"]
    actual: dict[str, int] = json.loads(args.counts)
    differences = [
        f"  {table}: backup {expected.get(table, 'no table')}, "
        f"restored {actual.get(table, 'no table')}"
        for table in sorted(set(expected) | set(actual))
        if expected.get(table) != actual.get(table)
    ]
    if differences:
        raise ManifestError(
            f"the restored {args.role} database differs from the backup:\n" + "\n".join(differences)
        )
    print(f"{args.role}: {len(actual)} tables, {sum(actual.values())} rows, as in the backup")


def record(args: argparse.Namespace) -> None:
    """A value of the state record ``visionops server start`` writes (empty when null)."""
    try:
        value = json.loads(Path(args.record).read_text()).get(args.key)
    except (OSError, ValueError, AttributeError) as error:
        raise ManifestError(f"cannot read the server record {args.record}: {error}") from error
    print("" if value is None else value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    actions = parser.add_subparsers(dest="action", required=True)
    writer = actions.add_parser("write")
    writer.add_argument("out")
    for option in (
        "created-at",
        "postgres-uri",
        "server-version",
        "pg-dump-version",
        "mlflow-version",
        "artifacts-destination",
    ):
        writer.add_argument(f"--{option}", required=True)
    writer.add_argument("--s3-endpoint", default="")
    writer.add_argument(
        "--database",
        nargs=6,
        action="append",
        required=True,
        metavar=("ROLE", "NAME", "FILE", "SHA256", "REVISION", "COUNTS_JSON"),
    )
    writer.set_defaults(run=write)
    lister = actions.add_parser("dumps")
    lister.add_argument("manifest")
    lister.set_defaults(run=dumps)
    getter = actions.add_parser("get")
    getter.add_argument("manifest")
    getter.add_argument("key", help="a dotted key, e.g. databases.tracking.alembic_revision")
    getter.set_defaults(run=get)
    summariser = actions.add_parser("summary")
    summariser.add_argument("manifest")
    summariser.set_defaults(run=summary)
    comparer = actions.add_parser("compare")
    comparer.add_argument("manifest")
    comparer.add_argument("role", choices=ROLES)
    comparer.add_argument("counts")
    comparer.set_defaults(run=compare)
    recorder = actions.add_parser("record")
    recorder.add_argument("record", help="STATE_DIR/server.json")
    recorder.add_argument("key")
    recorder.set_defaults(run=record)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
