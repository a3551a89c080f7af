"""Runs sharding_checks.py on 8 forced CPU devices, in a pytest process of its own."""

import os
import pathlib
import re
import subprocess
import sys


def test_shardings_on_8_devices():
  checks = pathlib.Path(__file__).with_name("sharding_checks.py")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  result = subprocess.run(
    [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", str(checks)],
    env=env,
    capture_output=True,
    text=True,
    timeout=900,
  )
  assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
  # 13 transforms x jit or not x 2 kinds of axes; 3 8-bit transforms x jit x 2 gathered leaves;
  # state_shardings: 13 transforms x 2 kinds of axes.
  assert re.search(r"\b90 passed in\b", result.stdout), result.stdout[-2000:]
