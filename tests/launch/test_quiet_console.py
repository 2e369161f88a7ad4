"""What a CPU user sees: no libtpu start-up errors (JAX_PLATFORMS defaults to cpu only where no
accelerator is visible) and no known-harmless orbax warnings."""

import logging
import os
import subprocess
import sys

import pytest

from mio_jax import console, host_platform

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _machine(tmp_path, nodes=(), pci=()):
  """A fake /dev with `nodes` and a fake sysfs PCI folder with (vendor, device) pairs."""
  dev, bus = tmp_path / "dev", tmp_path / "pci"
  for node in nodes:
    (dev / node).parent.mkdir(parents=True, exist_ok=True)
    (dev / node).write_text("")
  for i, (vendor, device) in enumerate(pci):
    (bus / f"0000:00:{i:02x}.0").mkdir(parents=True)
    (bus / f"0000:00:{i:02x}.0" / "vendor").write_text(vendor + "\n")
    (bus / f"0000:00:{i:02x}.0" / "device").write_text(device + "\n")
  dev.mkdir(exist_ok=True)
  bus.mkdir(exist_ok=True)
  return str(dev), str(bus)


@pytest.mark.parametrize("nodes, pci, env, visible", [
    ((), (), {}, False),  # a plain CPU box
    (("vfio/vfio", "null"), [("0x8086", "0x0d57"), ("0x1af4", "0x1041")], {}, False),  # virtio, Intel
    ((), [("0x1ae0", "0x0042"), ("0x1ae0", "0x001f")], {}, False),  # GCE VM: gVNIC and NVMe only
    (("accel0",), (), {}, True),  # TPU v4 and older
    (("vfio/0",), (), {}, True),  # TPU v5e and newer
    ((), [("0x1ae0", "0x0063")], {}, True),  # a v5e chip on the PCI bus
    ((), [("0x1ae0", "0x9999")], {}, True),  # an unknown Google device: maybe a newer TPU
    (("nvidia0",), (), {}, True),
    (("nvidiactl",), (), {}, True),
    (("kfd",), (), {}, True),
    ((), (), {"TPU_ACCELERATOR_TYPE": "v5litepod-8"}, True),
    ((), (), {"TPU_ACCELERATOR_TYPE": ""}, False),
])
def test_accelerator_visible(tmp_path, nodes, pci, env, visible):
  dev, bus = _machine(tmp_path, nodes, pci)
  assert host_platform.accelerator_visible(dev, bus, env) is visible


def test_an_explicit_jax_platforms_is_kept(monkeypatch):
  for value in ("", "tpu", "cpu"):
    monkeypatch.setenv("JAX_PLATFORMS", value)
    assert host_platform.default_to_cpu_without_accelerator() is False
    assert os.environ["JAX_PLATFORMS"] == value


@pytest.mark.skipif(host_platform.accelerator_visible(), reason="this machine has an accelerator")
def test_cpu_machine_starts_jax_without_a_word_on_stderr():
  env = {k: v for k, v in os.environ.items() if k != "JAX_PLATFORMS"}
  code = ("from mio_jax.host_platform import default_to_cpu_without_accelerator as d\n"
          "assert d()\nimport jax\nprint(jax.devices()[0].platform)")
  proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == "cpu"
  assert proc.stderr == ""


def test_only_the_harmless_orbax_warning_is_dropped():
  def record(message):
    return logging.LogRecord("absl", logging.WARNING, __file__, 1, message, None, None)
  assert not console.keep_record(record("Metadata file does not exist: /w/checkpoints/2/params/_CHECKPOINT_METADATA"))
  assert console.keep_record(record("Metadata file does not exist: /w/checkpoints/2/params/other"))
  assert console.keep_record(record("Checkpoint at /w/checkpoints/2 is incomplete"))
