"""The base of the image tokenizers' `load(DIR)` objects: the model's weights, replicated over an
optional mesh, and input batches padded and split over that mesh's data axis."""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P


class BatchedTokenizer:
  """With a mesh, the batch is split over its `data_axis` (padded to a multiple of that axis's
  size) and the weights are replicated."""

  def __init__(self, model: nnx.Module, config, mesh: Mesh | None = None, data_axis: str = "data"):
    self.config, self.mesh, self.data_axis = config, mesh, data_axis
    self._graphdef, state = nnx.split(model)
    if mesh is not None:
      if data_axis not in mesh.axis_names:
        raise ValueError(f"mesh has axes {mesh.axis_names}, no data axis {data_axis!r}")
      # Images are independent: let the partitioner propagate the batch split (an Explicit-axes
      # mesh would ask for an output sharding on every reshape).
      mesh = Mesh(mesh.devices, mesh.axis_names, axis_types=(AxisType.Auto,) * mesh.devices.ndim)
      self.mesh = mesh
      state = jax.device_put(state, NamedSharding(mesh, P()))
      self._batch_sharding = NamedSharding(mesh, P(data_axis))
    self._state = state

  def _method(self, name: str):
    """The model's method `name` as a pure function of (state, *args), for jax.jit."""
    graphdef = self._graphdef
    return lambda s, *a: getattr(nnx.merge(graphdef, s), name)(*a)

  def _shard(self, x):
    """Pad the batch to the data axis size and place it split over that axis; (x, true batch)."""
    x = jnp.asarray(x)
    if self.mesh is None:
      return x, x.shape[0]
    n, b = self.mesh.shape[self.data_axis], x.shape[0]
    pad = -b % n
    if pad:
      x = jnp.concatenate([x, jnp.repeat(x[-1:], pad, axis=0)])
    return jax.device_put(x, self._batch_sharding), b
