#!/usr/bin/env python3
"""A small checkout service on vaultd: reads card numbers (one per line,
``PAN MM/YYYY``) from standard input, never from arguments, stores each
card (tokenize, as a merchant), waits until its network token is active,
and asks for the payment credentials (as the forwarder) to pay 12.50 CHF.
It prints only the alias, the masked number and what kind of credential
would go to the processor, never a card number, token number or cryptogram.

    VAULTD_SOCKET=$PWD/var/vaultd.sock python3 examples/checkout_service.py <<< "4111111111111111 12/2030"

The uid running it needs the merchant and forwarder roles for tenant t-a
(config/dev.toml gives both to the developer's uid).
"""

import asyncio
import sys

from vaultd_client import AsyncClient, Pan, ServerError

TENANT = "t-a"


async def checkout(vault: AsyncClient, line: str) -> None:
    number, _, expiry = line.strip().partition(" ")
    month, _, year = expiry.partition("/")
    pan = Pan(number)
    try:
        card = await vault.tokenize(pan, int(month), int(year))
        print(f"stored {card.masked} as {card.alias} (new: {card.created})")
        for _ in range(300):  # the token service answers within a second or so; wait up to 30 s
            info = (await vault.alias_status(card.alias)).token_info
            if info is None or info.status != "pending":
                break
            await asyncio.sleep(0.1)
        cred = await vault.credentials(card.alias, TENANT, ["network_token", "pan"], "customer", 1250, "CHF")
        print(f"pay with a {cred.kind} credential ({cred.scheme}): {cred!r}")
    except ServerError as e:
        # e.code is PROTOCOL.md's error code; retry when e.retryable.
        print(f"refused: {e.code} (retryable: {e.retryable})", file=sys.stderr)


async def main() -> None:
    async with AsyncClient(timeout=10) as vault:  # $VAULTD_SOCKET or /run/vaultd/vaultd.sock
        print(f"vaultd ready: {(await vault.health()).ready}")
        lines = [line for line in sys.stdin if line.strip()]
        await asyncio.gather(*(checkout(vault, line) for line in lines))  # pipelined on one connection


if __name__ == "__main__":
    asyncio.run(main())
