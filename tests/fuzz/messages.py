"""ProcessingRequest streams made from the protobuf schema, and made worse.

A message is built field by field from its descriptor: a random subset of its fields, one
member of each oneof, repeated fields and maps of a few entries, strings and bytes of every
size class (empty, short, a few KiB, up to MAX_BYTES), integers at their edges, enum numbers
the schema does not know, nesting cut off at MAX_DEPTH. Its serialized form is then sometimes
mutated: truncated, bits flipped, bytes inserted, or another message's bytes appended (which
protobuf merges). A stream is a few such messages, then one way to end.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

MAX_DEPTH = 4
MAX_REPEATED = 4
MAX_BYTES = 256 << 10  # under the sidecar's 4 MiB message bound: the plugins see these
MAX_MESSAGES = 8
INT_EDGES = (0, 1, -1, 127, 128, 255, 256, 65535, 2**31 - 1, -(2**31), 2**32 - 1)
INT64_EDGES = (*INT_EDGES, 2**63 - 1, -(2**63), 2**64 - 1)
_SIGNED = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32}
_SIGNED64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64,
             FieldDescriptor.TYPE_SFIXED64}
_UNSIGNED = {FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32}
_UNSIGNED64 = {FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64}


class Ending(enum.Enum):
    HALF_CLOSE = "half-close"  # the client is done sending; the server ends the call
    CANCEL = "cancel"  # the client resets the stream after its last message
    ABANDON = "abandon"  # the client stops reading and goes away mid-stream


@dataclass(frozen=True)
class FuzzStream:
    chain: str
    messages: tuple[bytes, ...]
    ending: Ending


class Generator:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def stream(self, message_type: type[Message], chain: str) -> FuzzStream:
        count = self.rng.randint(0, MAX_MESSAGES)
        return FuzzStream(chain, tuple(self.payload(message_type) for _ in range(count)),
                          self.rng.choice(list(Ending)))

    def payload(self, message_type: type[Message]) -> bytes:
        wire = self.message(message_type).SerializeToString()
        roll = self.rng.random()
        if roll < 0.75:  # most intact: a malformed message ends its stream there
            return wire
        if roll < 0.8 and wire:
            return wire[:self.rng.randrange(len(wire))]  # truncated
        if roll < 0.85 and wire:
            flipped = bytearray(wire)
            for _ in range(self.rng.randint(1, 8)):
                flipped[self.rng.randrange(len(flipped))] ^= 1 << self.rng.randrange(8)
            return bytes(flipped)
        if roll < 0.95:
            at = self.rng.randint(0, len(wire))
            return wire[:at] + self.rng.randbytes(self.rng.randint(1, 16)) + wire[at:]
        return wire + self.message(message_type).SerializeToString()  # merged on parsing

    def message(self, message_type: type[Message]) -> Message:
        message = message_type()
        self._fill(message, message.DESCRIPTOR, 0)
        return message

    def _fill(self, message: Message, descriptor: Descriptor, depth: int) -> None:
        chosen_oneofs = {oneof.name: self.rng.choice(oneof.fields)
                         for oneof in descriptor.oneofs if oneof.fields}
        for field in descriptor.fields:
            oneof = field.containing_oneof
            if oneof is not None and chosen_oneofs.get(oneof.name) is not field:
                continue
            if self.rng.random() < 0.35:
                continue
            self._set(message, field, depth)

    def _set(self, message: Message, field: FieldDescriptor, depth: int) -> None:
        if field.message_type is not None and depth >= MAX_DEPTH:
            return
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entries = getattr(message, field.name)
            key_field, value_field = field.message_type.fields_by_name["key"], \
                field.message_type.fields_by_name["value"]
            for _ in range(self.rng.randint(0, MAX_REPEATED)):
                key = self._scalar(key_field)
                if value_field.message_type is not None:
                    self._fill(entries[key], value_field.message_type, depth + 1)
                else:
                    entries[key] = self._scalar(value_field)
            return
        if field.is_repeated:
            values = getattr(message, field.name)
            for _ in range(self.rng.randint(0, MAX_REPEATED)):
                if field.message_type is not None:
                    self._fill(values.add(), field.message_type, depth + 1)
                else:
                    values.append(self._scalar(field))
            return
        if field.message_type is not None:
            child = getattr(message, field.name)
            child.SetInParent()
            self._fill(child, field.message_type, depth + 1)
            return
        setattr(message, field.name, self._scalar(field))

    def _scalar(self, field: FieldDescriptor) -> object:
        kind = field.type
        if kind == FieldDescriptor.TYPE_BOOL:
            return self.rng.random() < 0.5
        if kind == FieldDescriptor.TYPE_STRING:
            return self._text()
        if kind == FieldDescriptor.TYPE_BYTES:
            return self._bytes()
        if kind == FieldDescriptor.TYPE_ENUM:
            known = [value.number for value in field.enum_type.values]
            return self.rng.choice([*known, *known, self.rng.randint(-5, 1000)])
        if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            return self.rng.choice([0.0, -1.5, 1e300, float("inf"), float("nan")])
        edges, bits, signed = (
            (INT_EDGES, 32, True) if kind in _SIGNED else
            (INT64_EDGES, 64, True) if kind in _SIGNED64 else
            (INT_EDGES, 32, False) if kind in _UNSIGNED else
            (INT64_EDGES, 64, False))
        low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
        return next(value for value in (self.rng.choice(edges), 0) if low <= value <= high)

    def _size(self) -> int:
        size_class = self.rng.random()
        if size_class < 0.2:
            return 0
        if size_class < 0.7:
            return self.rng.randint(1, 64)
        if size_class < 0.95:
            return self.rng.randint(65, 8192)
        return self.rng.randint(8193, MAX_BYTES)

    def _bytes(self) -> bytes:
        return self.rng.randbytes(self._size())

    def _text(self) -> str:
        alphabet = ("abcXYZ019:-_/ ", "\x00\x01\r\n\t\x7f", "é€😀\u200b\ufeff")
        chars = "".join(alphabet)
        return "".join(self.rng.choice(chars) for _ in range(min(self._size(), 4096)))

