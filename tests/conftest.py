"""Settings of every test process: XLA's persistent compilation cache, shared by the parallel
workers, so that the many tests that jit the same programs again (each run of a runner builds its
steps anew, as the experiment runner does) compile each program once."""

import pathlib
import tempfile

import jax

jax.config.update(
  "jax_compilation_cache_dir", str(pathlib.Path(tempfile.gettempdir()) / "dualoptim_jax-xla-cache")
)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
