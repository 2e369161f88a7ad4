"""benchmarks/matmul_ceiling.py: both sides' products agree (checked inside, against torch.mm) and the
bound it prints is PyTorch's matmul time over XLA's, summed over ViT-g's 39 blocks."""

import re

from benchmarks import matmul_ceiling


def test_prints_each_shape_and_the_bound_it_allows(capsys):
  result = matmul_ceiling.main(["--images=1", "--rounds=1", "--threads=0"])
  out = capsys.readouterr().out
  for name in matmul_ceiling.SHAPES:
    assert f"-- {name}: [257, " in out, name
  bound = float(re.search(r"allow an exact port: ([0-9.]+)x", out).group(1))
  assert abs(bound - result["torch_seconds"] / result["xla_seconds"]) < 0.01
  assert "load after:" in out
