# Shim for tools that still call `python setup.py`: every fact is in pyproject.toml.
from setuptools import setup

setup()
