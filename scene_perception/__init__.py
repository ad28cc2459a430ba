"""scene_perception: stereo depth, scene understanding and pose for ROS 2.

The generated message package (``scene_perception.msg``) is built by rosidl from ``msg/`` and installed
into the environment prefix, outside this source tree.  ``extend_path`` lets both halves of the package
(our Python sources and the generated messages) live under one import name, as they do in a colcon build.
"""

# Layers, lowest first; a module imports only its own layer and lower ones, and peers (same rank) do not
# import each other.  test/test_layers.py enforces it (and that only ros/ imports ROS, nothing imports
# benchmarks/):
#   geometry < models < losses, engines < pipelines < data < training, evaluation < ros < cli
# The label set is models/labels.py, the split seeds data/splits.py, benchmark helpers
# evaluation/benchmarking.py.  This file sits below every layer and imports none of them.

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
