"""Python client of vaultd, the card vault daemon (wire protocol v1).

>>> from vaultd_client import Client, Pan
>>> with Client("/run/vaultd/vaultd.sock") as vault:          # doctest: +SKIP
...     rec = vault.tokenize(Pan(pan_from_form), 12, 2030)
...     print(rec.alias, rec.masked)
"""

from .errors import *  # noqa: F401,F403  (one class per error code)
from .types import *  # noqa: F401,F403  (the result dataclasses)
from . import errors, types, wire  # noqa: E402  (after the star imports)
from .aio import AsyncClient
from .client import Call, Client
from .errors import ERROR_CLASSES, ServerError, VaultdError
from .pan import Pan

__all__ = [
    "AsyncClient",
    "Call",
    "Client",
    "ERROR_CLASSES",
    "Pan",
    "ServerError",
    "VaultdError",
    "errors",
    "types",
    "wire",
]
__version__ = "0.1.0"
