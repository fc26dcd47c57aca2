"""CurveZMQ on the external endpoint: only listed clients receive anything."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest
import zmq

from perception.bus.schema import Envelope, Status
from perception.bus.security import KeyError_, generate_keys
from perception.node.config import ConfigError, build_config
from perception.outputs.publisher import PublisherConfig, PublisherLogic
from perception.system.client import subscribe

_ports = itertools.count(17900)


class _Msg:
    def __init__(self, seq: int) -> None:
        self.envelope = Envelope("status", seq, time.monotonic_ns(), None, Status("x", 1))
        self.pixels = None


def _serve_and_listen(pub: PublisherLogic, address: str, curve: tuple[str, str] | None, seconds: float = 2.0) -> int:
    """Publish continuously from a thread; count what one client receives in ``seconds``."""
    stop = threading.Event()

    def publish() -> None:
        seq = 0
        while not stop.is_set():
            pub.step(0, _Msg(seq))  # type: ignore[arg-type]
            seq += 1
            time.sleep(0.02)

    t = threading.Thread(target=publish)
    t.start()
    got = 0
    deadline = time.monotonic() + seconds
    try:
        for _ in subscribe(["status"], address, curve=curve, timeout_s=seconds):
            got += 1
            if got >= 3 or time.monotonic() > deadline:
                break
    finally:
        stop.set()
        t.join()
    return got


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, Path]]:
    return {n: generate_keys(tmp_path / "keys", n) for n in ("server", "robot", "stranger")}


def test_only_authorised_client_receives(keys: dict[str, tuple[Path, Path]]) -> None:
    address = f"tcp://127.0.0.1:{next(_ports)}"
    cfg = build_config(
        PublisherConfig,
        {
            "bind": address,
            "topics": ["status"],
            "curve_secret_key": str(keys["server"][1]),
            "allowed_clients": [str(keys["robot"][0])],
        },
    )
    pub = PublisherLogic(cfg, zmq.Context.instance())
    try:
        server_public = str(keys["server"][0])
        assert _serve_and_listen(pub, address, (str(keys["robot"][1]), server_public)) > 0
        assert _serve_and_listen(pub, address, (str(keys["stranger"][1]), server_public)) == 0
        assert _serve_and_listen(pub, address, None) == 0
    finally:
        pub.close()


def test_exposed_bind_needs_keys_or_insecure(keys: dict[str, tuple[Path, Path]]) -> None:
    with pytest.raises(ConfigError, match="not loopback.*perception keys generate"):
        build_config(PublisherConfig, {"bind": "tcp://0.0.0.0:7780"})
    assert build_config(PublisherConfig, {"bind": "tcp://0.0.0.0:7780", "insecure": True}).insecure
    with pytest.raises(ConfigError, match="allowed_clients"):
        build_config(PublisherConfig, {"bind": "tcp://0.0.0.0:7780", "curve_secret_key": str(keys["server"][1])})
    with pytest.raises(ConfigError, match="holds no secret key"):
        build_config(PublisherConfig, {"curve_secret_key": str(keys["server"][0]), "allowed_clients": ["x"]})


def test_bad_key_files(tmp_path: Path) -> None:
    from perception.bus.security import load_key

    with pytest.raises(KeyError_, match="does not exist"):
        load_key(tmp_path / "nope.key", secret=False)
    (tmp_path / "junk.key").write_text("hello")
    with pytest.raises(KeyError_):
        load_key(tmp_path / "junk.key", secret=False)
