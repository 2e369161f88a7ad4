"""One process of a multi-process codebook fit (tests/codebook/test_codebook_multiprocess.py).

argv[1]: JSON {embeddings, workdir, overrides}; jax.distributed starts from the JAX_* variables.
Prints RESULT {process, count, step, sha256 of the centroids}."""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from codebook_helpers import tiny_config  # noqa: E402
from mio_jax.codebook.fit import fit  # noqa: E402

args = json.loads(sys.argv[1])
result = fit(tiny_config(args["embeddings"], **args["overrides"]), args["workdir"])
import jax  # noqa: E402

print("RESULT " + json.dumps(dict(process=jax.process_index(), count=jax.process_count(), step=result.step,
                                  sha=hashlib.sha256(result.centroids.tobytes()).hexdigest())), flush=True)
