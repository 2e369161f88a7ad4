"""tokenizers_port is a library of its own: none of its modules imports the application (mio_jax)."""

import ast
import glob
import os

PORT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                    "tokenizers_port")


def imported_modules(path: str) -> set[str]:
  """Every module an import statement in the file names, at any depth (functions included)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  names = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
  return names


def test_imported_modules_sees_nested_imports(tmp_path):
  path = tmp_path / "m.py"
  path.write_text("import os\ndef f():\n  from mio_jax.tokenize import job\n  import mio_jax.data\n")
  assert imported_modules(str(path)) == {"os", "mio_jax.tokenize", "mio_jax.data"}


def test_tokenizers_port_imports_nothing_from_mio_jax():
  files = sorted(glob.glob(os.path.join(PORT, "**", "*.py"), recursive=True))
  assert len(files) > 20  # the whole package was walked
  offenders = {os.path.relpath(f, PORT): sorted(m for m in imported_modules(f) if m.split(".")[0] == "mio_jax")
               for f in files}
  assert {f: m for f, m in offenders.items() if m} == {}
