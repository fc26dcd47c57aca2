"""``perception doctor [--launch FILE] [--set NODE.KEY=VALUE]``: versions, providers, GPU,
cameras, cards and free space; a non-zero exit when the launch file's choices cannot be met."""

from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--launch", default=None, help="also check that this launch file's choices can be met")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NODE.KEY=VALUE")
    p.add_argument("--models", default="models", help="folder of model cards to check (without --launch)")


def run(args: argparse.Namespace) -> int:
    from perception.system.doctor import diagnose

    report = diagnose(args.launch, args.overrides, args.models)
    print(report.text())
    return 1 if report.problems else 0
