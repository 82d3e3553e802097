"""Strict reading of TOML tables: unknown keys and wrong types are errors that name the field."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class TableError(ValueError):
    """A field is unknown, missing or of the wrong type; the message names it."""


class TomlError(ValueError):
    """Text that is not TOML this project reads; the message says why."""


def read_toml(text: str) -> dict[str, Any]:
    """Parsed TOML. Hostile files break tomllib in ways that are not TOMLDecodeError: nesting
    thousands deep (RecursionError), integers of thousands of digits (ValueError)."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TomlError(str(exc)) from None
    except RecursionError:
        raise TomlError("nested too deeply") from None
    except ValueError as exc:  # int()'s limit on digits
        raise TomlError(str(exc)) from None


class Table:
    """A view of one TOML table that remembers which keys were read, to reject the rest."""

    def __init__(self, data: Mapping[str, Any], where: str) -> None:
        if not isinstance(data, Mapping):
            raise TableError(f"{where}: expected a table, found {type(data).__name__}")
        self._data = data
        self._where = where
        self._read: set[str] = set()

    def path(self, key: str) -> str:
        return f"{self._where}.{key}" if self._where else key

    def has(self, key: str) -> bool:
        return key in self._data

    def _missing(self, key: str, default: T | None) -> T:
        """An absent field: its default, or an error when it has none (it is required)."""
        self._read.add(key)
        if default is None:
            raise TableError(f"{self.path(key)}: required field is missing")
        return default

    def get(self, key: str, kind: type[T], default: T | None = None) -> T:
        if key not in self._data:
            return self._missing(key, default)
        self._read.add(key)
        value = self._data[key]
        # bool is an int in Python; a TOML boolean where a number is expected is still wrong.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TableError(
                f"{self.path(key)}: expected {kind.__name__}, found {type(value).__name__}"
            )
        return value

    def get_positive(self, key: str, default: int) -> int:
        value = self.get(key, int, default)
        if value <= 0:
            raise TableError(f"{self.path(key)}: must be a positive integer, found {value}")
        return value

    def get_choice(self, key: str, choices: Mapping[str, T], default: T | None = None) -> T:
        if key not in self._data:
            return self._missing(key, default)
        self._read.add(key)
        value = self._data[key]
        if not isinstance(value, str) or value not in choices:
            known = ", ".join(sorted(choices))
            raise TableError(f"{self.path(key)}: {value!r} is not one of: {known}")
        return choices[value]

    def get_strings(self, key: str, default: tuple[str, ...] | None = None) -> tuple[str, ...]:
        values = self.get(key, list, None if default is None else list(default))
        for item in values:
            if not isinstance(item, str):
                raise TableError(f"{self.path(key)}: expected a list of strings")
        return tuple(values)

    def sub(self, key: str, required: bool = False) -> Table:
        self._read.add(key)
        if key not in self._data:
            if required:
                raise TableError(f"{self.path(key)}: required table is missing")
            return Table({}, self.path(key))
        return Table(self._data[key], self.path(key))

    def items(self) -> list[tuple[str, Any]]:
        """All entries, for tables whose keys are names chosen by the user."""
        self._read.update(self._data)
        return list(self._data.items())

    def finish(self) -> None:
        """Reject any key that was not read: a typo must not be silently ignored."""
        unknown = sorted(set(self._data) - self._read)
        if unknown:
            raise TableError(f"{self.path(unknown[0])}: unknown field")

