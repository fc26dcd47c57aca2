"""Running the pipeline: launch files and the node table, the supervisor, running a launch
to completion, the subscriber client library, and ``perception doctor``.

Layer 7: imports every runtime folder below it; only ``train``, ``fleet`` and ``cli`` are above."""
