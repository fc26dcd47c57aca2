"""Frame sources and preprocessing: the camera node (V4L2 devices, video files, image
folders, streams; reconnects) and the undistort + letterbox node.

Layer 3: imports ``bus``, ``node``, ``geometry`` (the letterbox), ``calibration``."""
