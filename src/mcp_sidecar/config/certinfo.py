"""A certificate's validity, read from its PEM without a crypto library.

Rules this module keeps:

* Only what expiry warnings need: the leaf (first) certificate's
  ``notAfter``, from the DER of X.509's ``TBSCertificate`` (RFC 5280 4.1:
  ``[0] version`` optional, serial, signature, issuer, validity).  The
  certificate itself was already loaded by OpenSSL when this runs, so the
  bytes are a well-formed certificate; anything unexpected gives None, never
  an error.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import re
import time

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.+?)\s*-----END CERTIFICATE-----", re.S)
_SEQUENCE = 0x30
_EXPLICIT_0 = 0xA0
_UTC_TIME = 0x17
_GENERALIZED_TIME = 0x18


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content end) of the DER element at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        size = length & 0x7F
        length = int.from_bytes(data[pos : pos + size], "big")
        pos += size
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _time(tag: int, text: bytes) -> float:
    value = text.decode("ascii")
    if not value.endswith("Z"):
        raise ValueError("not UTC")
    if tag == _UTC_TIME:  # YYMMDDHHMMSSZ; RFC 5280: YY < 50 is 20YY
        year = int(value[:2])
        value = f"{2000 + year if year < 50 else 1900 + year}{value[2:]}"
    return float(calendar.timegm(time.strptime(value[:14], "%Y%m%d%H%M%S")))


def not_after(chain_pem: bytes) -> float | None:
    """The first certificate's end of validity (unix time), or None."""
    match = _PEM_CERT.search(chain_pem)
    if match is None:
        return None
    try:
        der = base64.b64decode(b"".join(match.group(1).split()), validate=True)
        tag, start, _ = _tlv(der, 0)  # Certificate
        tag, pos, _end = _tlv(der, start)  # TBSCertificate
        if tag != _SEQUENCE:
            return None
        if der[pos] == _EXPLICIT_0:  # version
            pos = _tlv(der, pos)[2]
        for _ in range(3):  # serialNumber, signature, issuer
            pos = _tlv(der, pos)[2]
        tag, vpos, _ = _tlv(der, pos)  # Validity
        if tag != _SEQUENCE:
            return None
        vpos = _tlv(der, vpos)[2]  # notBefore
        tag, tstart, tend = _tlv(der, vpos)  # notAfter
        if tag not in (_UTC_TIME, _GENERALIZED_TIME):
            return None
        return _time(tag, der[tstart:tend])
    except (ValueError, IndexError, binascii.Error):
        return None
