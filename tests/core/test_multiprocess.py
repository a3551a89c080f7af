"""Two processes on this machine (gloo CPU collectives, two devices each) train and unlearn as
one program: both end with the same parameters, equal to a one-process run up to float reduction
order, and only process 0 writes the run's files."""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np

WORKER = pathlib.Path(__file__).with_name("multiprocess_worker.py")


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def start(out, process_id, num_processes, port, devices):
  env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  args = [sys.executable, str(WORKER), str(out), str(process_id), str(num_processes), str(port)]
  return subprocess.Popen(
    args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
  )


def finish(process, timeout=600):
  try:
    output, _ = process.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    process.kill()
    raise
  assert process.returncode == 0, output[-4000:]


def test_two_processes_train_as_one(tmp_path):
  port = free_port()
  shared, single = tmp_path / "shared", tmp_path / "single"
  workers = [start(shared, i, 2, port, devices=2) for i in range(2)]
  alone = start(single, 0, 1, port, devices=1)
  for process in [*workers, alone]:
    finish(process)
  two = [dict(np.load(shared / f"params_{i}.npz")) for i in range(2)]
  one = dict(np.load(single / "params_0.npz"))
  assert two[0].keys() == one.keys() and len(one) == 5  # hidden, bn (2), out (2)
  for name in one:
    np.testing.assert_array_equal(two[0][name], two[1][name])
    np.testing.assert_allclose(two[0][name], one[name], rtol=2e-4, atol=2e-5)
  # The run file comes from process 0 of the 4-device run; the single run wrote its own.
  assert json.loads((shared / "run.json").read_text()) == {"process": 0, "devices": 4}
  assert json.loads((single / "run.json").read_text()) == {"process": 0, "devices": 1}
