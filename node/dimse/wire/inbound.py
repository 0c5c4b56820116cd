"""Received DIMSE messages: checked, bounded, and a C-STORE whose data set cannot be written answered.

Safety hook (installed in both modes) on
``pynetdicom.dimse.DIMSEServiceProvider.receive_primitive``, which the DUL
thread calls with every P-DATA it receives.  Before pynetdicom sees a
message, this module

- collects its command set (at most :data:`.limits.MAX_COMMAND_SET` bytes)
  and checks it: a command set that does not parse, lacks an element its
  command needs, or names a presentation context that was not accepted ends
  the association with an A-ABORT and one log line naming the problem
  (pynetdicom would raise in its DUL or association thread, leaving the
  peer without an answer);
- bounds the data set pynetdicom holds in memory (identifiers of C-FIND,
  C-MOVE, C-GET, N-* messages: :data:`.limits.MAX_IDENTIFIER`); C-STORE
  data sets are spooled to a file as they arrive;
- when that file cannot be written (disk full), drops it, swallows the rest
  of the data set and answers the C-STORE-RQ with 0xA700 and an
  ErrorComment, so that the association goes on;
- with the fast path on, hands C-STORE-RQs and C-ECHO-RQs of associations
  the node accepted to :mod:`.fast_store` instead of pynetdicom.

:func:`discard` removes a data set cut off by a dying association.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pynetdicom import _config
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import P_DATA

from ... import statuses as st
from . import codec, fast_store, limits

log = logging.getLogger("node.dimse.wire")


class Receiver(Protocol):
    """What the node does with what it receives; attached to each association it accepts."""

    def stored(self, assoc, path: Path) -> tuple[int, str]:
        """Ingest the spooled Part-10 file *path*; (status, ErrorComment).  The file is taken."""

    def failed(self, assoc, sop_instance: str, error: str) -> tuple[int, str]:
        """The data set of *sop_instance* could not be received (*error*); (status, ErrorComment)."""

    def echo(self, assoc) -> int:
        """A C-ECHO-RQ arrived; the status to answer."""


@dataclass
class StoreRequest:
    """The C-STORE-RQ whose data set is being received."""

    context_id: int
    message_id: int
    sop_class: str
    sop_instance: str


_REQUIRED = {
    st.C_STORE_RQ: (codec.MESSAGE_ID, codec.AFFECTED_SOP_CLASS, codec.AFFECTED_SOP_INSTANCE),
    st.C_FIND_RQ: (codec.MESSAGE_ID, codec.AFFECTED_SOP_CLASS),
    st.C_GET_RQ: (codec.MESSAGE_ID, codec.AFFECTED_SOP_CLASS),
    st.C_MOVE_RQ: (codec.MESSAGE_ID, codec.AFFECTED_SOP_CLASS, codec.MOVE_DESTINATION),
    st.C_ECHO_RQ: (codec.MESSAGE_ID, codec.AFFECTED_SOP_CLASS),
    st.C_CANCEL_RQ: (codec.RESPONDED_TO,),
}
_NEEDS_DATA = {st.C_STORE_RQ, st.C_FIND_RQ, st.C_GET_RQ, st.C_MOVE_RQ}
_NO_DATA = {st.C_ECHO_RQ, st.C_CANCEL_RQ, st.C_STORE_RSP, st.C_ECHO_RSP}
_US_ELEMENTS = (codec.MESSAGE_ID, codec.RESPONDED_TO, codec.STATUS, codec.PRIORITY)
_UID_CHARS = frozenset(b"0123456789.")


def _element_name(element: int) -> str:
    return f"(0000,{element:04X})"


def check_command(values: dict[int, bytes], accepted: Callable[[int], bool], context_id: int) -> str:
    """Why the parsed command set *values* cannot be served ("" when it can)."""
    field = codec.read_us(values, codec.COMMAND_FIELD)
    if field is None:
        return "no CommandField (0000,0100)"
    name = st.COMMAND_NAMES.get(field)
    if name is None:
        return f"unknown CommandField 0x{field:04X}"
    dataset_type = codec.read_us(values, codec.DATASET_TYPE)
    if dataset_type is None:
        return f"{name} without CommandDataSetType (0000,0800)"
    for element in _US_ELEMENTS:
        if element in values and len(values[element]) != 2:
            return f"{name}: {_element_name(element)} is not one US value"
    required = _REQUIRED.get(field)
    if required is None:
        required = (codec.RESPONDED_TO, codec.STATUS) if field & 0x8000 else (codec.MESSAGE_ID,)
    for element in required:
        value = values.get(element)
        if value is None or (element not in _US_ELEMENTS and not value.strip(b"\0 ")):
            return f"{name} without {_element_name(element)}"
    for element in (codec.AFFECTED_SOP_CLASS, codec.AFFECTED_SOP_INSTANCE):
        raw = values.get(element, b"").rstrip(b"\0 ")
        if len(raw) > 64 or not _UID_CHARS.issuperset(raw):
            return f"{name}: {_element_name(element)} is not a UID"
    if field in _NEEDS_DATA and dataset_type == st.NO_DATASET:
        return f"{name} without its data set"
    if field in _NO_DATA and dataset_type != st.NO_DATASET:
        return f"{name} announcing a data set"
    if not accepted(context_id):
        return f"{name} on presentation context {context_id}, which was not accepted"
    return ""


class _Inbound:
    """Where the message being received stands (one per association)."""

    __slots__ = ("command", "in_data", "mode", "data_bytes", "limit", "store", "error", "incoming", "dead")

    PASS, FAST, DISCARD = 0, 1, 2

    def __init__(self) -> None:
        self.command = bytearray()
        self.dead = False
        self.reset()

    def reset(self) -> None:
        self.in_data = False
        self.mode = self.PASS
        self.data_bytes = 0
        self.limit: int | None = None
        self.store: StoreRequest | None = None
        self.error = ""
        self.incoming: fast_store.Incoming | None = None


def _state(provider: DIMSEServiceProvider) -> _Inbound:
    state = provider.__dict__.get("_node_inbound")
    if state is None:
        state = provider._node_inbound = _Inbound()
    return state


def _peer(assoc) -> str:
    remote = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    return f"{(remote.ae_title or '?').strip()} from {remote.address}:{remote.port}"


_original_receive = DIMSEServiceProvider.receive_primitive


def _pass(provider: DIMSEServiceProvider, context_id: int, data) -> None:
    primitive = P_DATA()
    primitive.presentation_data_value_list = [[context_id, bytes(data)]]
    _original_receive(provider, primitive)


def _drop_partial(provider: DIMSEServiceProvider) -> None:
    """Forget the message pynetdicom is decoding, and delete the file it spools to."""
    message = provider.message
    provider.message = None
    if message is None:
        return
    spool, path = getattr(message, "_data_set_file", None), getattr(message, "_data_set_path", None)
    if spool is not None:
        try:
            spool.close()
        except OSError:
            pass
    if path is not None:
        Path(path).unlink(missing_ok=True)


def _abort(provider: DIMSEServiceProvider, state: _Inbound, why: str) -> None:
    log.warning("association %s: %s; aborted", _peer(provider.assoc), why)
    provider.assoc._node_refusal = why
    state.dead = True
    if state.incoming is not None:
        fast_store.discard(state.incoming)
    _drop_partial(provider)
    # Evt19 (invalid PDU/message): pynetdicom's state machine sends the A-ABORT.
    provider.dul.event_queue.put("Evt19")


def receive_primitive(self: DIMSEServiceProvider, primitive: P_DATA) -> None:
    """Replacement of ``DIMSEServiceProvider.receive_primitive`` (see the module docstring)."""
    receive_pdvs(self, primitive.presentation_data_value_list)


def receive_pdvs(self: DIMSEServiceProvider, items) -> None:
    """The presentation data values [context ID, bytes or memoryview] of one P-DATA, in order."""
    state = _state(self)
    for context_id, data in items:
        if state.dead:
            return
        if not data:
            _abort(self, state, "empty presentation data value")
            return
        control = data[0]
        if control & 1:
            if state.in_data:
                _abort(self, state, "command fragment inside a data set")
                return
            if len(state.command) + len(data) - 1 > limits.MAX_COMMAND_SET:
                _abort(self, state, f"command set longer than {limits.MAX_COMMAND_SET} bytes")
                return
            state.command += memoryview(data)[1:]
            if control & 2:
                _command(self, state, context_id)
            continue
        if not state.in_data:
            _abort(self, state, "data set fragment without a command announcing one")
            return
        last = bool(control & 2)
        if state.mode == _Inbound.FAST:
            fast_store.data(state.incoming, data)
        elif state.mode == _Inbound.PASS:
            if state.limit is not None:
                state.data_bytes += len(data) - 1
                if state.data_bytes > state.limit:
                    _abort(self, state, f"data set longer than {state.limit} bytes")
                    return
            try:
                _pass(self, context_id, data)
            except OSError as exc:
                if state.store is None:
                    raise
                _spool_failed(self, state, exc)
        if last:
            if state.mode == _Inbound.FAST:
                fast_store.finish(self, state.incoming)
            elif state.mode == _Inbound.DISCARD:
                _answer_failure(self, state)
            state.reset()


def _command(provider: DIMSEServiceProvider, state: _Inbound, context_id: int) -> None:
    raw = bytes(state.command)
    state.command.clear()
    assoc = provider.assoc
    try:
        values = codec.parse_command(raw)
        problem = check_command(values, assoc._accepted_cx.__contains__, context_id)
    except ValueError as exc:
        problem = str(exc)
    if problem:
        _abort(provider, state, f"malformed command set: {problem}")
        return
    field = codec.read_us(values, codec.COMMAND_FIELD)
    has_data = codec.read_us(values, codec.DATASET_TYPE) != st.NO_DATASET
    if field == st.C_STORE_RQ:
        state.store = StoreRequest(
            context_id,
            codec.read_us(values, codec.MESSAGE_ID) or 0,
            codec.read_uid(values, codec.AFFECTED_SOP_CLASS),
            codec.read_uid(values, codec.AFFECTED_SOP_INSTANCE),
        )
    fast = fast_store.handlers(assoc)
    if fast is not None:
        if state.store is not None:
            state.incoming = fast_store.begin(provider, fast, state.store)
            state.in_data, state.mode = True, _Inbound.FAST
            return
        if field == st.C_ECHO_RQ:
            fast_store.echo(provider, fast, context_id, values)
            state.reset()
            return
    state.in_data = has_data
    chunked = state.store is not None and _config.STORE_RECV_CHUNKED_DATASET
    state.limit = None if chunked else limits.MAX_IDENTIFIER
    try:
        _pass(provider, context_id, b"\x03" + raw)
    except OSError as exc:
        if state.store is None:
            raise
        _spool_failed(provider, state, exc)
    if not has_data:
        state.reset()


def _spool_failed(provider: DIMSEServiceProvider, state: _Inbound, exc: OSError) -> None:
    state.mode = _Inbound.DISCARD
    state.error = f"could not write the data set: {exc.strerror or exc}"
    _drop_partial(provider)


def _answer_failure(provider: DIMSEServiceProvider, state: _Inbound) -> None:
    """Answer a C-STORE-RQ whose data set could not be spooled, through pynetdicom."""
    request = state.store
    assoc = provider.assoc
    receiver: Receiver | None = getattr(assoc, "_node_receiver", None)
    if receiver is not None:
        status, comment = receiver.failed(assoc, request.sop_instance, state.error)
    else:
        log.warning("C-STORE of %s from %s: %s", request.sop_instance, _peer(assoc), state.error)
        status, comment = st.OUT_OF_RESOURCES, state.error
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = request.message_id
    rsp.AffectedSOPClassUID = request.sop_class
    rsp.AffectedSOPInstanceUID = request.sop_instance
    rsp.Status = status
    if comment:
        rsp.ErrorComment = codec.error_comment(comment)
    provider.send_msg(rsp, request.context_id)


def discard(assoc) -> None:
    """Remove what a dying association left half-received (its spool file)."""
    provider = assoc.dimse
    state = provider.__dict__.get("_node_inbound")
    if state is not None and state.incoming is not None:
        fast_store.discard(state.incoming)
        state.incoming = None
    _drop_partial(provider)


def install() -> None:
    DIMSEServiceProvider.receive_primitive = receive_primitive


def installed() -> bool:
    return DIMSEServiceProvider.receive_primitive is receive_primitive
