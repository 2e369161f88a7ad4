"""TensorBoard event files read back without TensorBoard: TFRecord framing + tensorboardX's Event proto."""

import struct

from tensorboardX.proto.event_pb2 import Event, SessionLog

from mio_jax import storage


def read_records(data: bytes) -> list[bytes]:
  """TFRecord framing: uint64 length, uint32 masked crc, payload, uint32 masked crc (crcs not checked)."""
  out, pos = [], 0
  while pos < len(data):
    (length,) = struct.unpack_from("<Q", data, pos)
    out.append(data[pos + 12:pos + 12 + length])
    pos += 12 + length + 4
  assert pos == len(data), "trailing bytes after the last record"
  return out


def read_scalars(tb_dir: str) -> tuple[dict[str, dict[int, list[float]]], list[int]]:
  """({tag: {step: [values as TensorBoard keeps them]}}, steps of SessionLog START markers).

  Files in name order, as TensorBoard reads a run; a START at step S discards every earlier
  value at steps >= S (TensorBoard's purge of orphaned data after a restart).
  """
  scalars: dict[str, dict[int, list[float]]] = {}
  starts = []
  for name in sorted(p.rsplit("/", 1)[-1] for p in storage.glob(tb_dir + "/events.out.tfevents.*")):
    for record in read_records(storage.as_path(tb_dir + "/" + name).read_bytes()):
      event = Event.FromString(record)
      if event.HasField("session_log") and event.session_log.status == SessionLog.START:
        starts.append(event.step)
        for steps in scalars.values():
          for s in [s for s in steps if s >= event.step]:
            del steps[s]
      for v in event.summary.value:
        scalars.setdefault(v.tag, {}).setdefault(event.step, []).append(v.simple_value)
  return scalars, starts
