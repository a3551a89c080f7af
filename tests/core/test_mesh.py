"""Runs mesh_checks.py on 8 forced CPU devices, in a pytest process of its own; parses meshes."""

import pathlib

import pytest

from dualoptim_jax.core import parse_mesh

from helpers import run_on_8_devices


def test_mesh_checks_on_8_devices():
  # fsdp rule, refusals, 2 inits, pretraining, 6 methods x 2 meshes, an LLM run, 2 LLM steps
  run_on_8_devices(str(pathlib.Path(__file__).with_name("mesh_checks.py")), 20)


def test_parse_mesh():
  assert parse_mesh("data=4,fsdp=2") == {"data": 4, "fsdp": 2}
  assert parse_mesh(" fsdp=8 ") == {"fsdp": 8}
  assert parse_mesh("") == {}
  for bad in ("data=0", "model=2", "data=2,data=4", "data", "data=x"):
    with pytest.raises(ValueError, match="Bad mesh"):
      parse_mesh(bad)
