"""What leaves the node for other tools: the external publisher, the Foxglove bridge and
scene export, ROS 2 bags, and overlay videos.

Layer 6: imports layers 0-5 (``evaluation`` for a run's latency rows)."""
