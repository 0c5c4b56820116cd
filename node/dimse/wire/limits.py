"""The bounds the wire layer holds every peer to, whatever it announces.

Memory per association is at most one PDU (the largest the node accepts,
below) plus one command set plus, for messages other than C-STORE, one
identifier; C-STORE data sets go to a file as they arrive.  With the default
``max_pdu`` of 1 MiB that is under 20 MiB even for a peer that lies about
every length.
"""

from __future__ import annotations

# What the node advertises when [dicom].max_pdu = 0 ("no limit"): PS3.8 lets
# 0 mean unlimited, but a reader must then hold whatever a peer announces.
# 4 MiB is 32 times DCMTK's default and beyond where larger PDUs stop
# paying (a 1 MiB PDU is already ~1 system call per MiB).
UNLIMITED_MAX_PDU = 4 * 1024 * 1024

# A P-DATA-TF may exceed the advertised maximum by this much before it is
# refused: some implementations count the PDV header or the PDU header into
# the maximum, none by more than a few bytes.
PDU_MARGIN = 1024

# A-ASSOCIATE-RQ / -AC: 128 presentation contexts with a dozen transfer
# syntaxes each, plus a user identity item, stay well below this.
MAX_ASSOCIATE_PDU = 256 * 1024

# A-ASSOCIATE-RJ, A-RELEASE-RQ/-RP and A-ABORT have a 4-byte body (PS3.8 9.3).
MAX_SMALL_PDU = 64

# A command set is a few hundred bytes; the largest legitimate ones (an
# N-ACTION with an attribute list) stay far below this.
MAX_COMMAND_SET = 64 * 1024

# A C-FIND / C-MOVE / C-GET identifier (or an N-* data set) is held in
# memory by pynetdicom; a C-MOVE of 65,535 listed SOP Instance UIDs is ~4 MiB.
MAX_IDENTIFIER = 16 * 1024 * 1024


def advertised_max_pdu(configured: int) -> int:
    """The maximum PDU length the node advertises for ``[dicom].max_pdu`` = *configured*."""
    return configured or UNLIMITED_MAX_PDU


def pdu_limit(kind: int, advertised: int) -> int:
    """The largest body (PDU length field) accepted for a PDU of type *kind*."""
    if kind in (0x01, 0x02):
        return MAX_ASSOCIATE_PDU
    if kind == 0x04:
        return advertised_max_pdu(advertised) + PDU_MARGIN
    return MAX_SMALL_PDU
