"""The card number type: prints and reprs only its masked form."""

from __future__ import annotations

import hmac


def mask_digits(digits: str) -> str:
    """First six and last four kept, every other character ``x``; strings of
    10 or fewer characters (or not ASCII) are masked completely, as the Rust
    ``vault_proto::pan::mask_digits`` does."""
    n = len(digits)
    if n <= 10 or not digits.isascii():
        return "x" * min(n, 19)
    return digits[:6] + "x" * (n - 10) + digits[-4:]


def luhn_valid(digits: str) -> bool:
    """Luhn (mod 10) check over ASCII digits."""
    if not digits or not (digits.isascii() and digits.isdigit()):
        return False
    total = 0
    for i, c in enumerate(reversed(digits)):
        v = ord(c) - 48
        if i % 2 == 1:
            v *= 2
            if v > 9:
                v -= 9
        total += v
    return total % 10 == 0


class Pan:
    """A primary account number, or a network token number (same shape, same
    secrecy).

    ``str()``, ``repr()`` and ``format()`` give the masked form
    (``411111xxxxxx1111``); the digits themselves take an explicit
    :meth:`expose`. It cannot be pickled. Not validated on construction: the
    server answers ``invalid_pan`` for a bad number (:meth:`check` tells
    beforehand).

    Python strings cannot be wiped from memory; keep a ``Pan``'s lifetime
    short.
    """

    __slots__ = ("_digits",)

    def __init__(self, digits: str) -> None:
        if isinstance(digits, Pan):
            digits = digits.expose()
        if not isinstance(digits, str):
            raise TypeError("a Pan is made from a str")
        object.__setattr__(self, "_digits", digits)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Pan is immutable")

    def expose(self) -> str:
        """The digits. Every call is a place where card data leaves the type."""
        return self._digits

    def masked(self) -> str:
        return mask_digits(self._digits)

    @property
    def bin(self) -> str:
        """First six digits."""
        return self._digits[:6]

    @property
    def last4(self) -> str:
        return self._digits[-4:]

    def check(self) -> str | None:
        """``None`` when 12 to 19 ASCII digits with a valid Luhn check digit,
        else why not (the reason never contains the number)."""
        d = self._digits
        if not (d.isascii() and d.isdigit()):
            return "card number must be ASCII digits only"
        if not 12 <= len(d) <= 19:
            return "card number must have 12 to 19 digits"
        if not luhn_valid(d):
            return "card number fails the Luhn check"
        return None

    def __len__(self) -> int:
        return len(self._digits)

    def __repr__(self) -> str:
        return f"Pan({self.masked()})"

    def __str__(self) -> str:
        return self.masked()

    def __format__(self, spec: str) -> str:
        return format(self.masked(), spec)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Pan):
            return hmac.compare_digest(self._digits.encode(), other._digits.encode())
        return NotImplemented

    def __hash__(self) -> int:
        return hash(("Pan", self._digits))

    def __reduce__(self):  # pickling would write the digits out
        raise TypeError("a Pan cannot be pickled")

    def __copy__(self) -> "Pan":
        return self

    def __deepcopy__(self, memo: dict) -> "Pan":
        return self
