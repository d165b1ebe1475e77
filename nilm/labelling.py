"""Checks on what a user types as a device name, shared by the dashboard and `nilm label`.

Pure: strings in, a cleaned name or a clear message out. A name is what the models learn as a
class and what every chart shows, so a blank, a paragraph or an invisible control character is
refused with a message saying what was wrong and what to type instead.
"""

from __future__ import annotations

import unicodedata

__all__ = ["MAX_DEVICE_NAME_CHARS", "InvalidDeviceName", "clean_device_name", "device_name_problem"]

MAX_DEVICE_NAME_CHARS = 64


class InvalidDeviceName(ValueError):
    """A device name that cannot be stored; the message says why and what to do."""


def _shown(name: str, limit: int = 40) -> str:
    """The name as a message quotes it: repr() makes control characters visible; long is cut."""
    text = repr(name)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def device_name_problem(name: object) -> str | None:
    """What is wrong with a device name, or None if it can be stored (after trimming spaces).

    Parameters
    ----------
    name
        What the user typed.

    Examples
    --------
    >>> device_name_problem("fridge") is None
    True
    >>> device_name_problem("   ")
    'The device name is empty: type a name such as "fridge" or "kettle".'
    >>> device_name_problem("x" * 200)
    'The device name is 200 characters long; the limit is 64. Use a shorter name.'
    >>> print(device_name_problem("dish\\twasher"))  # doctest: +NORMALIZE_WHITESPACE
    The device name 'dish\\twasher' contains a control character (U+0009, character 5); use
    letters, digits, spaces and punctuation only.
    """
    if not isinstance(name, str):
        return f"The device name must be text, not {type(name).__name__}."
    cleaned = name.strip()
    if not cleaned:
        return 'The device name is empty: type a name such as "fridge" or "kettle".'
    if len(cleaned) > MAX_DEVICE_NAME_CHARS:
        return (
            f"The device name is {len(cleaned)} characters long; the limit is "
            f"{MAX_DEVICE_NAME_CHARS}. Use a shorter name."
        )
    for position, char in enumerate(cleaned):
        # Cc: control characters (tab, newline, escape...); Cf: invisible format characters
        # (zero-width space, bidi overrides) that would make two names look the same.
        if unicodedata.category(char) in ("Cc", "Cf"):
            return (
                f"The device name {_shown(cleaned)} contains a control character "
                f"(U+{ord(char):04X}, character {position + 1}); use letters, digits, spaces and "
                "punctuation only."
            )
    return None


def clean_device_name(name: object) -> str:
    """The device name to store: trimmed of surrounding spaces, inner runs of spaces collapsed.

    Raises `InvalidDeviceName` with a message for the user when the name cannot be stored.

    Examples
    --------
    >>> clean_device_name("  heat   pump ")
    'heat pump'
    >>> clean_device_name("")
    Traceback (most recent call last):
    ...
    nilm.labelling.InvalidDeviceName: The device name is empty: type a name such as "fridge" ...
    """
    problem = device_name_problem(name)
    if problem is not None:
        raise InvalidDeviceName(problem)
    assert isinstance(name, str)
    return " ".join(name.split())
