"""``visionops admin create-user|grant|revoke``: users and permissions on the team server.

The caller's credentials are MLflow's (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``, or ``.env``)::

    visionops admin create-user --username alice --password-file alice.pw
    visionops admin grant --user alice --experiment cifar10 --permission EDIT
    visionops admin grant --user bob --model vision-classifier --permission MANAGE
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from visionops.cli.output import add_json_flag, emit
from visionops.server.settings import PERMISSIONS


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    admin = subparsers.add_parser(
        "admin",
        help="create users and grant permissions on the team tracking server",
        description="Talks to MLFLOW_TRACKING_URI (or --tracking-uri) as "
        "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD: an admin, or for grants a user with "
        "MANAGE on the resource.",
    )
    actions = admin.add_subparsers(dest="admin_command", required=True, metavar="COMMAND")

    create = actions.add_parser(
        "create-user",
        help="create a user (admin only)",
        description="The password comes from --password-file, else VISIONOPS_NEW_USER_PASSWORD, "
        "else a prompt on a terminal; never from the command line, where `ps` and the shell "
        "history would keep it.",
    )
    create.add_argument("--username", required=True, help="the new user's name")
    create.add_argument(
        "--password-file", type=Path, metavar="FILE", help="file holding the password"
    )
    create.add_argument("--admin", action="store_true", help="make the user an admin")
    _add_common(create)

    grant = actions.add_parser(
        "grant",
        help="give a user a permission on an experiment or a registered model",
        description="READ: see runs and models. EDIT: also log runs, update. MANAGE: also "
        "delete and grant to others. NO_PERMISSIONS: cannot even read (stored as MLflow's "
        "DENY). Granting again replaces the earlier grant. A --model that is not registered "
        "yet is created, empty: MLflow makes whoever creates a model its manager.",
    )
    grant.add_argument("--permission", required=True, type=str.upper, choices=PERMISSIONS)
    _add_target(grant)

    revoke = actions.add_parser(
        "revoke",
        help="remove a user's grant (the server's default permission applies again)",
    )
    _add_target(revoke)
    admin.set_defaults(func=cmd_admin)


def _add_target(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--user", required=True, help="the user the grant is for")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--experiment", metavar="NAME_OR_ID", help="an experiment")
    target.add_argument("--model", metavar="NAME", help="a registered model")
    _add_common(parser)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", help="the tracking server (default: MLFLOW_TRACKING_URI)")
    add_json_flag(parser)


def cmd_admin(args: argparse.Namespace) -> int:
    from visionops.server.users import UserAdmin, new_user_password
    from visionops.tracking.connection import check_command_server

    # The server UserAdmin resolves too; checked before it imports mlflow.server (slow).
    args.tracking_server = check_command_server(args.tracking_uri)

    if args.admin_command == "create-user":
        # Read the password before talking to the server, so a missing one fails fast.
        password = new_user_password(args.password_file)
        user = UserAdmin(args.tracking_uri).create_user(args.username, password, args.admin)
        role = "admin" if user["is_admin"] else "user"
        emit([f"created {role} {user['username']!r} (id {user['id']})"], user, args.json)
        return 0

    admin = UserAdmin(args.tracking_uri)
    resource = (
        admin.experiment(args.experiment) if args.experiment else admin.registered_model(args.model)
    )
    payload: dict[str, Any] = {
        "user": args.user,
        "resource_type": resource.type,
        "resource_id": resource.id,
    }
    if args.admin_command == "revoke":
        removed = admin.revoke(args.user, resource)
        payload["revoked"] = removed
        line = (
            f"revoked {args.user!r}'s grant on {resource.label}"
            if removed
            else f"{args.user!r} had no grant on {resource.label}"
        )
        emit([line], payload, args.json)
        return 0

    result = admin.grant(args.user, resource, args.permission)
    payload.update(
        permission=result.permission,
        mlflow_permission=result.mlflow_permission,
        replaced=result.replaced,
        resource_exists=resource.exists,
        model_created=result.created,
    )
    stored = (
        f" (stored as {result.mlflow_permission})"
        if result.mlflow_permission != result.permission
        else ""
    )
    lines = [
        f"{args.user!r} has {result.permission}{stored} on {resource.label}"
        + (" (replacing the earlier grant)" if result.replaced else "")
    ]
    if result.created:
        lines.append(
            f"created the {resource.label} (no versions yet), so that the grant keeps its level: "
            "MLflow gives MANAGE to whoever creates a model"
        )
    emit(lines, payload, args.json)
    return 0
