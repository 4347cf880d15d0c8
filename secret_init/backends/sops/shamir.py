"""Combining Shamir shares of a sops data key, as sops' copy of HashiCorp Vault's shamir does.

A file with several key groups stores one share of the data key per group. Each share is
the secret's length plus one byte. The last byte is the share's x coordinate. Every other
byte is a point of a separate polynomial over GF(2^8) with the AES reduction polynomial
x^8 + x^4 + x^3 + x + 1. The secret is each polynomial's value at x = 0,
found by Lagrange interpolation.
"""

from __future__ import annotations

AES_POLYNOMIAL = 0x11B


def add(a: int, b: int) -> int:
    """Add two field elements (XOR)."""
    return a ^ b


def mult(a: int, b: int) -> int:
    """Multiply two field elements: carry-less multiplication reduced by AES_POLYNOMIAL."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        a <<= 1
        if a & 0x100:
            a ^= AES_POLYNOMIAL
        b >>= 1
    return result


def inverse(a: int) -> int:
    """Multiplicative inverse: a^254, because a^255 = 1 for every non-zero a."""
    if a == 0:
        raise ZeroDivisionError("zero has no inverse in GF(2^8)")
    result = 1
    power = a
    exponent = 254
    while exponent:
        if exponent & 1:
            result = mult(result, power)
        power = mult(power, power)
        exponent >>= 1
    return result


def div(a: int, b: int) -> int:
    """Divide a by b (b non-zero)."""
    return mult(a, inverse(b))


def interpolate_at_zero(x_samples: list[int], y_samples: list[int]) -> int:
    """Evaluate at x = 0 the polynomial through the points (x_samples[i], y_samples[i])."""
    result = 0
    for i, (x_i, y_i) in enumerate(zip(x_samples, y_samples)):
        basis = 1
        for j, x_j in enumerate(x_samples):
            if i == j:
                continue
            # (0 - x_j) / (x_i - x_j); subtraction is addition in GF(2^8).
            basis = mult(basis, div(x_j, add(x_i, x_j)))
        result = add(result, mult(y_i, basis))
    return result


def combine(shares: list[bytes]) -> bytes:
    """Recover the secret from at least two shares; raise ValueError for invalid shares."""
    if len(shares) < 2:
        raise ValueError("less than two shares cannot reconstruct the secret")
    length = len(shares[0])
    if length < 2:
        raise ValueError("shares must be at least two bytes long")
    if any(len(share) != length for share in shares):
        raise ValueError("all shares must be the same length")
    x_samples = [share[-1] for share in shares]
    if len(set(x_samples)) != len(x_samples):
        raise ValueError("two shares have the same x coordinate")
    secret = bytearray(length - 1)
    for index in range(length - 1):
        secret[index] = interpolate_at_zero(x_samples, [share[index] for share in shares])
    return bytes(secret)
