"""What every node process is built on: the logic/loop split (a pure ``step`` and the
process loop around it) and typed config from launch-file tables.

Layer 1: imports only ``bus``."""
