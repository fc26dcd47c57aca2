"""Subscribe to the running node from another process (see README: "Subscribe").

uv run python examples/subscribe.py                # tracks on tcp://127.0.0.1:7780
uv run python examples/subscribe.py frames.rect status
"""

import sys

from perception.system.client import subscribe

for msg in subscribe(sys.argv[1:] or ["tracks"], masks=True):
    print(
        msg.topic,
        msg.envelope.seq,
        f"age {msg.age_ms:.1f} ms" if msg.age_ms is not None else "",
        type(msg.payload).__name__,
    )
