"""CPU by default on a machine with no accelerator, so libtpu does not speak first.

With libtpu installed (the test extra installs it for ahead-of-time TPU compiles), JAX tries its TPU
backend on every start, and libtpu prints initialisation errors to stderr (unknown accelerator type,
"unexpected worker hostname", a source trace) before JAX falls back to CPU. The entry points call
`default_to_cpu_without_accelerator()` before JAX starts a backend: it sets JAX_PLATFORMS=cpu only
when the user has not set JAX_PLATFORMS and the machine shows no sign of an accelerator. Any sign
(a TPU or GPU device node, a Google PCI device that may be a TPU chip, a TPU environment variable)
leaves JAX's own choice alone, so a TPU VM or GPU node is never pinned to CPU.
"""

import glob
import os
import sys

# Device nodes of TPU chips (/dev/accel*: v2-v4; /dev/vfio/N: v5e and later), NVIDIA GPUs
# (/dev/dxg: WSL2) and AMD GPUs (/dev/kfd).
_ACCELERATOR_NODES = ("/dev/accel*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/nvidiactl",
                      "/dev/dxg", "/dev/kfd")
# Set on TPU VMs and by TPU schedulers; any of them means the user expects a TPU.
_TPU_ENV = ("TPU_ACCELERATOR_TYPE", "TPU_WORKER_HOSTNAMES", "TPU_NAME", "JAX_FORCE_TPU_INIT",
            "MEGASCALE_COORDINATOR_ADDRESS", "CLOUD_TPU_TASK_ID")
_GOOGLE_PCI_VENDOR = "0x1ae0"
_GOOGLE_NON_TPU_PCI = {"0x0042", "0x001f"}  # gVNIC network card, Google NVMe disk


def _google_pci_devices(root: str) -> list[str]:
  """Device ids of Google-vendor PCI devices under root (a sysfs devices folder)."""
  ids = []
  for vendor in glob.glob(os.path.join(root, "*", "vendor")):
    try:
      with open(vendor) as f:
        if f.read().strip() != _GOOGLE_PCI_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor), "device")) as f:
        ids.append(f.read().strip())
    except OSError:  # a device that went away, or unreadable: count it as unknown
      ids.append("?")
  return ids


def accelerator_visible(dev: str = "/dev", pci: str = "/sys/bus/pci/devices", env=None) -> bool:
  """True when this machine may have a TPU or GPU (device node, Google PCI device, TPU variable)."""
  env = os.environ if env is None else env
  if any(env.get(k) for k in _TPU_ENV):
    return True
  if any(glob.glob(os.path.join(dev, p.removeprefix("/dev/"))) for p in _ACCELERATOR_NODES):
    return True
  return any(d not in _GOOGLE_NON_TPU_PCI for d in _google_pci_devices(pci))


def default_to_cpu_without_accelerator() -> bool:
  """JAX_PLATFORMS=cpu when it is unset and no accelerator is visible; True when it set it."""
  if "JAX_PLATFORMS" in os.environ or accelerator_visible():
    return False
  os.environ["JAX_PLATFORMS"] = "cpu"
  if "jax" in sys.modules:  # imported already: its config read the variable at import
    sys.modules["jax"].config.update("jax_platforms", "cpu")
  return True
