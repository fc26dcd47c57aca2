"""Camera geometry: camera_info YAML files, checkerboard calibration, undistortion maps and
the ground plane that turns a mask's foot point into metres.

Layer 2: imports ``bus`` and ``node``."""
