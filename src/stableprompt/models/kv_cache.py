"""A KV-cache layer with spare room, written in place: the agent's decoding and the scorer's
suffix batches append to a context without copying it (transformers' DynamicLayer copies the
whole cache with torch.cat at every append, and once more when a cache is built from tensors)."""

from __future__ import annotations

from torch import Tensor
from transformers.cache_utils import DynamicLayer


class RoomyLayer(DynamicLayer):
    """A full-attention KV layer over preallocated buffers [rows, heads, capacity, dim] whose
    first `length` positions hold the context; appends write after them in place."""

    def __init__(self, key_buffer: Tensor, value_buffer: Tensor, length: int):
        super().__init__()
        self.device, self.is_initialized, self.length = key_buffer.device, True, length
        self.key_buffer, self.value_buffer = key_buffer, value_buffer
        self.keys = key_buffer[:, :, :length]
        self.values = value_buffer[:, :, :length]

    @classmethod
    def repeated(cls, keys: Tensor, values: Tensor, rows: int, room: int) -> RoomyLayer:
        """`rows` copies of a one-row context (or a `rows`-row one), with `room` more tokens."""
        _, heads, length, dim = keys.shape
        key_buffer = keys.new_empty(rows, heads, length + room, dim)
        value_buffer = values.new_empty(rows, heads, length + room, dim)
        key_buffer[:, :, :length] = keys  # broadcasts a one-row cache to `rows`
        value_buffer[:, :, :length] = values
        return cls(key_buffer, value_buffer, length)

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs):
        if key_states.requires_grad:
            raise RuntimeError("RoomyLayer writes in place: append under torch.no_grad()")
        end = self.length + key_states.shape[-2]
        if end > self.key_buffer.shape[-2]:  # out of room: grow by doubling
            for name in ("key_buffer", "value_buffer"):
                old = getattr(self, name)
                grown = old.new_empty(*old.shape[:2], 2 * end, old.shape[-1])
                grown[:, :, : self.length] = old[:, :, : self.length]
                setattr(self, name, grown)
        self.key_buffer[:, :, self.length : end] = key_states
        self.value_buffer[:, :, self.length : end] = value_states
        self.length = end
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def _only_appends(self, *args, **kwargs):
        raise NotImplementedError("RoomyLayer supports appending only")

    crop = batch_select_indices = batch_repeat_interleave = _only_appends
    reorder_cache = reset = offload = _only_appends
