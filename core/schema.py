"""Checking what lowbit reads from files: one small schema language for every file kind.

A file lowbit wrote may have been edited, truncated or copied from another version. Whatever is
read from it (a manifest, a graph header, a checkpoint's metadata, the calibration, a cache entry)
is checked against a schema before anything uses it, so that a bad field gives one clear error
naming the file, the field and the fix, never a ``KeyError`` deep inside, and never a silently
wrong result.

A schema is plain data: a type such as :data:`POSITIVE` or :data:`TEXT`, a :class:`Record` of
named fields, a :func:`list_of`, :func:`mapping_of`, :func:`one_of` or :func:`optional` of
schemas, or a :class:`Check` of a predicate with a description. :func:`validate` walks a value
and a schema together.
"""

import math
import numbers
from dataclasses import dataclass

from .errors import LowbitError

__all__ = ["Check", "Record", "list_of", "mapping_of", "one_of", "optional", "validate", "SchemaError",
           "INTEGER", "NATURAL", "POSITIVE", "FINITE", "TEXT", "FLAG", "ANY", "DICT"]


class SchemaError(Exception):
    """A value that does not fit its schema: where (a field path) and what is wrong."""

    def __init__(self, path, problem):
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path, self.problem = path, problem


@dataclass(frozen=True)
class Check:
    """A value for which ``test(value)`` holds; ``what`` describes it (``a positive integer``)."""

    what: str
    test: object

    def validate(self, value, path):
        ok = False
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError, ArithmeticError):
            pass
        if not ok:
            raise SchemaError(path, f"must be {self.what}, not {_show(value)}")
        return value


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


INTEGER = Check("an integer", _is_int)
NATURAL = Check("a non-negative integer", lambda v: _is_int(v) and v >= 0)
POSITIVE = Check("a positive integer", lambda v: _is_int(v) and v > 0)
FINITE = Check("a finite number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)
               and math.isfinite(v))
TEXT = Check("a string", lambda v: isinstance(v, str))
FLAG = Check("true or false", lambda v: isinstance(v, bool))
DICT = Check("an object", lambda v: isinstance(v, dict))
ANY = Check("anything", lambda v: True)


def one_of(*values):
    """One of ``values``."""
    return Check(f"one of {', '.join(map(repr, values))}", lambda v: v in values)


@dataclass(frozen=True)
class _Optional:
    schema: object

    def validate(self, value, path):
        return None if value is None else _validate(value, self.schema, path)


def optional(schema):
    """``None``, or a value of ``schema``."""
    return _Optional(schema)


@dataclass(frozen=True)
class _ListOf:
    schema: object
    least: int
    length: int

    def validate(self, value, path):
        if not isinstance(value, list):
            raise SchemaError(path, f"must be a list, not {_show(value)}")
        if len(value) < self.least:
            raise SchemaError(path, f"must hold at least {self.least} entr{'y' if self.least == 1 else 'ies'}")
        if self.length is not None and len(value) != self.length:
            raise SchemaError(path, f"must hold {self.length} entries, not {len(value)}")
        return [_validate(v, self.schema, f"{path}[{k}]") for k, v in enumerate(value)]


def list_of(schema, *, least=0, length=None):
    """A list of values of ``schema``: at least ``least`` of them, or exactly ``length``."""
    return _ListOf(schema, least, length)


@dataclass(frozen=True)
class _MappingOf:
    schema: object

    def validate(self, value, path):
        if not isinstance(value, dict):
            raise SchemaError(path, f"must be an object, not {_show(value)}")
        for key, v in value.items():
            if not isinstance(key, str):
                raise SchemaError(path, f"has a key that is not a string: {key!r}")
            _validate(v, self.schema, f"{path}.{key}" if path else key)
        return value


def mapping_of(schema):
    """An object whose every value is of ``schema`` (any keys)."""
    return _MappingOf(schema)


@dataclass(frozen=True)
class Record:
    """An object with ``fields`` (name -> schema), each required unless named in ``defaults``
    (name -> value used when it is missing). Other keys are allowed."""

    fields: dict
    defaults: dict = None

    def validate(self, value, path):
        if not isinstance(value, dict):
            raise SchemaError(path, f"must be an object, not {_show(value)}")
        defaults = self.defaults or {}
        for name, schema in self.fields.items():
            where = f"{path}.{name}" if path else name
            if name not in value:
                if name in defaults:
                    continue
                raise SchemaError(where, "is missing")
            _validate(value[name], schema, where)
        return value

    def extended(self, fields, defaults=None):
        """This record with more fields."""
        return Record({**self.fields, **fields}, {**(self.defaults or {}), **(defaults or {})})


def _validate(value, schema, path):
    if isinstance(schema, (Check, _Optional, _ListOf, _MappingOf, Record)):
        return schema.validate(value, path)
    raise TypeError(f"not a schema: {schema!r}")


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(value, schema, *, what, fix):
    """Return ``value`` if it fits ``schema``; else raise :class:`LowbitError` naming ``what``
    (the file, e.g. ``"manifest 'b/manifest.json'"``), the field and what is wrong, with ``fix``."""
    try:
        return _validate(value, schema, "")
    except SchemaError as e:
        field = f"field {e.path} " if e.path else ""
        raise LowbitError(f"{what}: {field}{e.problem}", fix) from None
