"""Builds wae_fast. (The C++ extension is added by the CPU-backend work.)"""
import re
from pathlib import Path

from setuptools import find_packages, setup

VERSION = re.search(r'__version__ = "([^"]+)"', Path("wae_fast/_version.py").read_text()).group(1)

setup(
    name="wae_fast",
    version=VERSION,
    description="Fused O(n)-memory kernel MMD for PyTorch and a Wasserstein Auto-Encoder trainer",
    packages=find_packages(include=["wae_fast", "wae_fast.*"]),
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy"],
)
