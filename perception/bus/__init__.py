"""The wire: the message schema and topic table, ZeroMQ publish/subscribe, the doorbells of
local readers, the RLE mask codec, class names, shared-memory frame rings and CurveZMQ keys.

Layer 0: imports nothing else of ``perception``; every other folder may import it."""
