"""Runs sharding_checks.py on 8 forced CPU devices, in a pytest process of its own."""

import pathlib

from helpers import run_on_8_devices


def test_shardings_on_8_devices():
  # 13 transforms x jit or not x 2 kinds of axes; 3 8-bit transforms x jit x 2 gathered leaves;
  # state_shardings: 13 transforms x 2 kinds of axes.
  run_on_8_devices(str(pathlib.Path(__file__).with_name("sharding_checks.py")), 90, timeout=900)
