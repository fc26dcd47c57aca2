"""``perception keys generate --out DIR --name NAME``: a CurveZMQ key pair."""

from __future__ import annotations

import argparse

from perception.bus.security import generate_keys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("generate",))
    p.add_argument("--out", default="keys", help="folder for the key files (default: keys/)")
    p.add_argument("--name", default="server", help="key name: writes NAME.key and NAME.key_secret")


def run(args: argparse.Namespace) -> int:
    public, secret = generate_keys(args.out, args.name)
    print(f"public key: {public}  (give this to the other side)")
    print(f"secret key: {secret}  (keep private; mode 0600)")
    return 0
