"""Password policy and hashing: Argon2id above OWASP's floor (m=19 MiB, t=2, p=1), NIST-style rules
(8+ characters, 64+ accepted, no composition rules, no truncation or case-folding), the most common
passwords refused. Unknown accounts cost the same Argon2 work as wrong passwords (`dummy_verify`)."""

from __future__ import annotations

import functools
from pathlib import Path

MIN_LENGTH = 8
MAX_LENGTH = 1024
TIME_COST = 2
MEMORY_COST_KIB = 19 * 1024
PARALLELISM = 1
_COMMON = Path(__file__).with_name("data") / "common-passwords.txt"


@functools.cache
def _hasher():
    from argon2 import PasswordHasher, Type

    return PasswordHasher(
        time_cost=TIME_COST,
        memory_cost=MEMORY_COST_KIB,
        parallelism=PARALLELISM,
        hash_len=32,
        salt_len=16,
        type=Type.ID,
    )


@functools.cache
def _common() -> frozenset[str]:
    lines = _COMMON.read_text(encoding="utf-8").splitlines()
    return frozenset(line.lower() for line in lines if line and not line.startswith("#"))


def policy_problem(password: str, *, email: str = "") -> str | None:
    """Why a new password is refused (a sentence to show), or None."""
    if len(password) < MIN_LENGTH:
        return f"Use at least {MIN_LENGTH} characters."
    if len(password) > MAX_LENGTH:
        return f"Use at most {MAX_LENGTH} characters."
    if password.lower() in _common():
        return "This password is one of the most common ones; pick something less guessable."
    if email and password.lower() == email.lower():
        return "Don't use your email address as your password."
    return None


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify(stored_hash: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return _hasher().verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher().check_needs_rehash(stored_hash)


# A real hash with the parameters above, made once: verifying against it costs what a real account costs.
DUMMY_HASH = "$argon2id$v=19$m=19456,t=2,p=1$Fa9i+w14OlCxd/f2FWgRkA$4qvyRvwE5uLUj3gbncGcV7/ibVwhcTLraXVMFfO+5bY"


def dummy_verify(password: str) -> None:
    """Spend one verification's worth of Argon2 work, so an unknown email answers like a wrong password."""
    verify(DUMMY_HASH, password)
