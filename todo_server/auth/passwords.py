"""Password hashing with the standard library's scrypt.

Parameters are stored with each hash (``scrypt$N$r$p$salt$hash``), so they can
be raised later without breaking old hashes; ``needs_rehash`` tells login to
upgrade a hash made with weaker parameters.

N=2^14, r=8, p=5 is one of OWASP's equivalent scrypt settings; it needs 16 MiB
per hash instead of the 128 MiB of N=2^17, p=1, which keeps a worker's memory
small. A hash still takes a good fraction of a second of one core
(bench/README.md). hashlib.scrypt releases the GIL, so hashes run in worker
threads and the event loop keeps serving meanwhile. Logins and registrations
hash in separate slots, at most ``os.cpu_count()`` at once each: a flood of
registrations (throttled per address, but an address may be a whole office)
can slow a login by sharing the cores, never queue it behind them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
import weakref

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 5
KEY_LENGTH = 32
SALT_BYTES = 16

#: Who is hashing: each purpose has its own slots.
LOGIN = "login"
REGISTRATION = "registration"

_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=256 * n * r + 1024 * 1024,
        dklen=length,
    )


def hash_password(password: str) -> str:
    """A new salted hash of ``password`` with the current parameters."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_LENGTH)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored``; compares in constant time."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        actual = _scrypt(password, base64.b64decode(salt), int(n), int(r), int(p), len(expected))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


def needs_rehash(stored: str) -> bool:
    """Whether ``stored`` was made with other parameters than today's."""
    return not stored.startswith(f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$")


def dummy_hash() -> str:
    """A well-formed hash no password matches: verifying against it when the user
    is unknown costs as much as a real check, so timing tells nothing."""
    salt, digest = secrets.token_bytes(SALT_BYTES), secrets.token_bytes(KEY_LENGTH)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _slots_here(purpose: str) -> asyncio.Semaphore:
    """The running event loop's semaphore for ``purpose`` (each test client runs its own loop)."""
    loop = asyncio.get_running_loop()
    by_purpose = _slots.setdefault(loop, {})
    slots = by_purpose.get(purpose)
    if slots is None:
        slots = by_purpose[purpose] = asyncio.Semaphore(os.cpu_count() or 2)
    return slots


async def hash_password_async(password: str, purpose: str) -> str:
    async with _slots_here(purpose):
        return await asyncio.to_thread(hash_password, password)


async def verify_password_async(password: str, stored: str) -> bool:
    """Verifying is what logins do: it takes a login slot."""
    async with _slots_here(LOGIN):
        return await asyncio.to_thread(verify_password, password, stored)
