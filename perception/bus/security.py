"""CurveZMQ authentication for the external endpoint.

``perception keys generate --out DIR --name NAME`` writes a key pair (``NAME.key``, public,
and ``NAME.key_secret``) in ZeroMQ's certificate format. The publisher loads its secret key
and accepts only the client public keys listed in the launch file; a client connects with
its own secret key and the server's public key. Built on ``zmq.auth`` (ZAP handler in a
thread), not on anything hand-rolled.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


class KeyError_(ValueError):
    """A key file that is missing or not a ZeroMQ certificate."""


def generate_keys(out_dir: str | os.PathLike[str], name: str) -> tuple[Path, Path]:
    """Write ``name.key`` (public) and ``name.key_secret`` (secret, mode 0600) to ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    public, secret = zmq.auth.create_certificates(out_dir, name)
    os.chmod(secret, 0o600)
    return Path(public), Path(secret)


def load_key(path: str | os.PathLike[str], secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) keys from a certificate file; ``secret`` says a secret key is needed."""
    if not os.path.isfile(path):
        raise KeyError_(f"key file {str(path)!r} does not exist")
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (ValueError, OSError, IndexError) as e:
        raise KeyError_(f"key file {str(path)!r} is not a ZeroMQ certificate: {e}") from None
    if secret and not secret_key:
        raise KeyError_(f"key file {str(path)!r} holds no secret key (expected the .key_secret file)")
    return public, secret_key


class _AllowList:
    def __init__(self, keys: set[bytes]) -> None:
        self.keys = keys

    def callback(self, domain: str, key: bytes) -> bool:  # key: Z85-encoded client public key
        return key in self.keys


def secure_server(ctx: zmq.Context, sock: zmq.Socket, secret_file: str, allowed: Sequence[str]) -> ThreadAuthenticator:
    """Make ``sock`` (not yet bound) a CURVE server accepting only the ``allowed`` client
    public key files. Returns the running authenticator; stop it when closing."""
    public, secret_key = load_key(secret_file, secret=True)
    keys = {load_key(p, secret=False)[0] for p in allowed}
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=_AllowList(keys))
    sock.curve_secretkey = secret_key
    sock.curve_publickey = public
    sock.curve_server = True
    return auth


def secure_client(sock: zmq.Socket, client_secret_file: str, server_public_file: str) -> None:
    """Make ``sock`` (not yet connected) a CURVE client of the server whose public key is
    in ``server_public_file``."""
    public, secret_key = load_key(client_secret_file, secret=True)
    server_public, _ = load_key(server_public_file, secret=False)
    sock.curve_secretkey = secret_key
    sock.curve_publickey = public
    sock.curve_serverkey = server_public
