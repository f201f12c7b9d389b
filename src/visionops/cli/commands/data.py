"""``visionops data cache``: decode a dataset once into the disk cache that training reuses.

visionops data cache --dataset imagefolder --data-dir data/cifar10-jpeg
visionops data cache --list --json
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from visionops.cli.config_flags import add_config_flag, config_overrides
from visionops.cli.output import add_json_flag, emit
from visionops.config import CONFIG_FIELDS, Override, TrainConfig, resolve_config

#: The config fields that decide what `visionops data cache` decodes and where it goes.
_DATA_CACHE_FIELDS = ("dataset", "data_dir", "download", "image_size", "cache_dir")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare datasets")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    cache = data_commands.add_parser(
        "cache",
        help="decode a dataset once into the disk cache that training reuses",
        description="Decode --dataset from --data-dir into uint8 arrays under --cache-dir "
        "(reused by every run with the same source files and image size). With --list, show "
        "the cache instead.",
        argument_default=argparse.SUPPRESS,
    )
    for flat in _DATA_CACHE_FIELDS:
        add_config_flag(cache, CONFIG_FIELDS[flat])
    cache.add_argument(
        "--list", action="store_true", default=False, help="list the cached datasets and exit"
    )
    add_json_flag(cache)
    data.set_defaults(func=cmd_data)


def cmd_data(args: argparse.Namespace) -> int:
    from visionops.data.cache import cache_entries, decoded_source

    cache_to_disk = Override("cache", "disk", "visionops data cache")
    cfg = resolve_config(TrainConfig(), [*config_overrides(args), cache_to_disk])
    if args.list:
        entries = list(cache_entries(cfg.data.cache_dir))
        lines = [
            f"{e['path']}  {e['dataset']}  {sum(e['splits'].values())} images  "
            f"{e['bytes'] / 2**20:.1f} MiB  from {e['source']}"
            for e in entries
        ] or [f"no cached datasets in {cfg.data.cache_dir}"]
        emit(lines, {"entries": entries}, args.json)
        return 0
    info = decoded_source(cfg.data).info  # refuses a dataset generated in memory
    payload = asdict(info)
    lines = [
        f"{'reused' if info.reused else 'created'} {info.location}",
        *(f"  {name}: {count} images" for name, count in info.num_images.items()),
        f"  {info.nbytes / 2**20:.1f} MiB decoded, {info.seconds:.1f} s",
    ]
    emit(lines, payload, args.json)
    return 0
