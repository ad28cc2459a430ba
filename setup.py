"""pip install for the pip (no ROS install) environment: ``pip install -e .``.

A colcon build on a ROS install does not use this file: package.xml says build_type ament_cmake, so
CMakeLists.txt installs the Python package, the generated messages and the data.
"""

from setuptools import find_packages, setup

setup(
    name="scene_perception",
    version="0.1.0",
    description="Stereo depth, scene understanding and pose for ROS 2",
    license="Apache-2.0",
    # package_dir {"": "."} makes setuptools' editable install a plain .pth path entry (the repo root) rather
    # than its import-hook finder. The finder is appended to sys.meta_path, i.e. consulted only after the
    # normal path search, and that search would already have returned a namespace package made of the
    # generated messages' directory in site-packages alone: our sources would never be imported. With a
    # path entry, the regular package (our scene_perception/__init__.py) wins over the namespace portion and
    # its pkgutil.extend_path then adds the generated directory to __path__.
    package_dir={"": "."},
    packages=find_packages(include=["scene_perception", "scene_perception.*"]),
    python_requires=">=3.11",
    install_requires=[
        "numpy>=1.26",
        "torch>=2.2",
        "safetensors>=0.4",
        "opencv-python-headless>=4.8",
        "PyYAML>=6.0",
        "tqdm>=4.60",
        "onnxruntime>=1.17",
        "onnx>=1.17",  # ONNX export + graph checks (engines/onnx_export.py)
        "onnxscript>=0.2",  # torch's dynamo ONNX exporter needs it
        "rosbags>=0.9",
        "matplotlib>=3.7",
    ],
    entry_points={"console_scripts": ["scene-perception=scene_perception.cli:main"]},
)
