"""scene_perception: stereo depth, scene understanding and pose for ROS 2.

The generated message package (``scene_perception.msg``) is built by rosidl from ``msg/`` and installed
into the environment prefix, outside this source tree.  ``extend_path`` lets both halves of the package
(our Python sources and the generated messages) live under one import name, as they do in a colcon build.
"""

from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
