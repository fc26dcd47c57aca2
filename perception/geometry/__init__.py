"""Image geometry shared by the nodes and training: the letterbox (resize keeping the aspect
ratio, pad to the model input size) and its transform back to camera pixels.

Layer 1: imports only ``bus`` (the :class:`~perception.bus.schema.Letterbox` message type)."""
