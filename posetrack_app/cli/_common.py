"""Arguments and helpers shared by several subcommands."""
from __future__ import annotations

import argparse

from ..config import AppConfig, load_config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML preset (see configs/); defaults apply without one")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
        help="override one config value, e.g. --set detector.input_size=1280 (repeatable)",
    )


def config_from_args(args: argparse.Namespace) -> AppConfig:
    return load_config(args.config, args.overrides)
