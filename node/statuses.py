"""The one table of DICOM statuses and DIMSE command fields for the whole node.

Status codes are PS3.7 Annex C and PS3.4 Annex B/C; the same numbers are
the DICOMweb FailureReason / WarningReason values (PS3.18 Table 10.5.3-1
and 10.5.3-2).  Plain integers and no protocol types, so that the core
(ingest, the query engine) and every door can share them.
"""

from __future__ import annotations

# -- statuses ------------------------------------------------------------------

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: pending, optional keys not supported
CANCELLED = 0xFE00

# Failures shared by every service (PS3.7 C.4)
PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_CLASS = 0x0118
SOP_CLASS_NOT_SUPPORTED = 0x0122  # also "no presentation context for it" in forward results
NOT_AUTHORIZED = 0x0124
DUPLICATE_INVOCATION = 0x0210
UNRECOGNIZED_OPERATION = 0x0211
MISTYPED_ARGUMENT = 0x0212

# Storage (PS3.4 B.2.3)
OUT_OF_RESOURCES = 0xA700  # 0xA7xx: refused, out of resources
DATASET_DOES_NOT_MATCH = 0xA900  # 0xA9xx: data set does not match SOP class
CANNOT_UNDERSTAND = 0xC000  # 0xCxxx: cannot understand
COERCION = 0xB000  # warning: coercion of data elements
ELEMENTS_DISCARDED = 0xB006
DATASET_DOES_NOT_MATCH_WARNING = 0xB007

# Query/Retrieve (PS3.4 C.4)
SUBOPS_ALL_FAILED = 0xA702  # C-MOVE / C-GET: out of resources, unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
SUBOPS_WARNING = 0xB000  # sub-operations complete, one or more failures or warnings

# DICOMweb-only FailureReason values (PS3.18 Table 10.5.3-1 and the node's own in the 0xC9xx range)
STUDY_UID_MISMATCH = 0xC409
METADATA_NOT_PARSEABLE = 0xC901
MISSING_BULKDATA = 0xC902
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122

_MEANINGS = {
    SUCCESS: "Success",
    PENDING: "Pending",
    PENDING_WARNING: "Pending (optional keys not supported)",
    CANCELLED: "Cancel",
    PROCESSING_FAILURE: "Processing failure",
    NO_SUCH_SOP_CLASS: "No such SOP class",
    SOP_CLASS_NOT_SUPPORTED: "SOP class not supported",
    NOT_AUTHORIZED: "Not authorized",
    DUPLICATE_INVOCATION: "Duplicate invocation",
    UNRECOGNIZED_OPERATION: "Unrecognized operation",
    MISTYPED_ARGUMENT: "Mistyped argument",
    OUT_OF_RESOURCES: "Refused: Out of resources",
    SUBOPS_ALL_FAILED: "Refused: Out of resources - unable to perform sub-operations",
    MOVE_DESTINATION_UNKNOWN: "Refused: Move destination unknown",
    DATASET_DOES_NOT_MATCH: "Data set does not match SOP class",
    CANNOT_UNDERSTAND: "Cannot understand / unable to process",
    COERCION: "Warning: coercion of data elements / sub-operations with failures",
    ELEMENTS_DISCARDED: "Warning: elements discarded",
    DATASET_DOES_NOT_MATCH_WARNING: "Warning: data set does not match SOP class",
    STUDY_UID_MISMATCH: "Study Instance UID does not match the request",
    METADATA_NOT_PARSEABLE: "Metadata not parseable",
    MISSING_BULKDATA: "Bulk data missing",
    TRANSFER_SYNTAX_NOT_SUPPORTED: "Transfer syntax not supported",
}


def is_success(status: int) -> bool:
    return status == SUCCESS


def is_pending(status: int) -> bool:
    return status in (PENDING, PENDING_WARNING)


def is_warning(status: int) -> bool:
    """0x0001 and 0xBxxx are warnings (PS3.7 C.3)."""
    return status == 0x0001 or status & 0xF000 == 0xB000


def is_ok(status: int | None) -> bool:
    """Success or a warning: the peer kept what it was sent."""
    return status is not None and (is_success(status) or is_warning(status))


def is_out_of_resources(status: int) -> bool:
    return status & 0xFF00 == 0xA700


def meaning(status: int) -> str:
    """A short meaning of *status*, by exact code and then by its class."""
    if status in _MEANINGS:
        return _MEANINGS[status]
    if is_out_of_resources(status):
        return "Refused: Out of resources"
    if status & 0xFF00 == 0xA900:
        return "Data set does not match SOP class"
    if 0xA000 <= status <= 0xAFFF:
        return "Failure"
    if status & 0xF000 == 0xC000:
        return "Cannot understand / unable to process"
    if is_warning(status):
        return "Warning"
    return "unknown status"


def status_text(status: int) -> str:
    """``0xA801 (Refused: Move destination unknown)``: a status and its meaning, for messages."""
    return f"0x{status:04X} ({meaning(status)})"


_LABELS = {
    PROCESSING_FAILURE: "processing_failure",
    SOP_CLASS_NOT_SUPPORTED: "sop_class_not_supported",
    NOT_AUTHORIZED: "not_authorized",
    STUDY_UID_MISMATCH: "study_uid_mismatch",
    METADATA_NOT_PARSEABLE: "metadata_not_parseable",
    MISSING_BULKDATA: "missing_bulkdata",
    TRANSFER_SYNTAX_NOT_SUPPORTED: "transfer_syntax_not_supported",
}


def label(status: int) -> str:
    """A short, stable name for a failure status (a metrics label): by exact code, then by class.

    The set of names is small and fixed, whatever code a peer invents, so a
    label built from it cannot grow without bound.
    """
    if status in _LABELS:
        return _LABELS[status]
    if is_out_of_resources(status):
        return "out_of_resources"
    if status & 0xFF00 == 0xA900:
        return "dataset_does_not_match"
    if status & 0xF000 == 0xC000:
        return "cannot_understand"
    if 0xA000 <= status <= 0xAFFF:
        return "refused"
    return "other"


# -- DIMSE command fields (PS3.7 E.1) ------------------------------------------

C_STORE_RQ = 0x0001
C_STORE_RSP = 0x8001
C_GET_RQ = 0x0010
C_GET_RSP = 0x8010
C_FIND_RQ = 0x0020
C_FIND_RSP = 0x8020
C_MOVE_RQ = 0x0021
C_MOVE_RSP = 0x8021
C_ECHO_RQ = 0x0030
C_ECHO_RSP = 0x8030
C_CANCEL_RQ = 0x0FFF
N_EVENT_REPORT_RQ = 0x0100
N_EVENT_REPORT_RSP = 0x8100
N_GET_RQ = 0x0110
N_GET_RSP = 0x8110
N_SET_RQ = 0x0120
N_SET_RSP = 0x8120
N_ACTION_RQ = 0x0130
N_ACTION_RSP = 0x8130
N_CREATE_RQ = 0x0140
N_CREATE_RSP = 0x8140
N_DELETE_RQ = 0x0150
N_DELETE_RSP = 0x8150

COMMAND_NAMES = {
    C_STORE_RQ: "C-STORE-RQ",
    C_STORE_RSP: "C-STORE-RSP",
    C_GET_RQ: "C-GET-RQ",
    C_GET_RSP: "C-GET-RSP",
    C_FIND_RQ: "C-FIND-RQ",
    C_FIND_RSP: "C-FIND-RSP",
    C_MOVE_RQ: "C-MOVE-RQ",
    C_MOVE_RSP: "C-MOVE-RSP",
    C_ECHO_RQ: "C-ECHO-RQ",
    C_ECHO_RSP: "C-ECHO-RSP",
    C_CANCEL_RQ: "C-CANCEL-RQ",
    N_EVENT_REPORT_RQ: "N-EVENT-REPORT-RQ",
    N_EVENT_REPORT_RSP: "N-EVENT-REPORT-RSP",
    N_GET_RQ: "N-GET-RQ",
    N_GET_RSP: "N-GET-RSP",
    N_SET_RQ: "N-SET-RQ",
    N_SET_RSP: "N-SET-RSP",
    N_ACTION_RQ: "N-ACTION-RQ",
    N_ACTION_RSP: "N-ACTION-RSP",
    N_CREATE_RQ: "N-CREATE-RQ",
    N_CREATE_RSP: "N-CREATE-RSP",
    N_DELETE_RQ: "N-DELETE-RQ",
    N_DELETE_RSP: "N-DELETE-RSP",
}

# CommandDataSetType (0000,0800): 0x0101 means no data set follows; anything else means one does.
NO_DATASET = 0x0101
DATASET_PRESENT = 0x0001  # what pynetdicom writes; any value but 0x0101 means present
