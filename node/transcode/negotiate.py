"""What to send a peer: as stored, transcoded to a syntax, or nothing.  Pure rules, no I/O.

The rules (issue 13, item 2), the same for every door:

1. The stored syntax, whenever the peer takes it: no work, nothing changes.
2. Else the peer's preference (its order) among the syntaxes the node can
   produce without loss from the stored one.
3. Else a lossy syntax, only when the peer takes nothing the node could
   produce losslessly but does take exactly that lossy syntax.
4. Else nothing: the peer cannot be served (the door answers 406, fails the
   sub-operation, ...).

As a requestor (C-MOVE sub-operations, forwarding, the /forward gateway) the
node proposes the stored syntax, Explicit VR Little Endian and Implicit VR
Little Endian, each in its own presentation context
(:func:`requestor_syntaxes`), so the peer can take the stored bytes and
still has the default to fall back on; then :func:`plan` over what it
accepted.  As an acceptor of storage contexts (C-GET's role reversal), a
context holds one syntax for every instance sent in it:
:func:`acceptor_syntax` picks it.  As an acceptor of the storage contexts a
peer will C-STORE on, :func:`receiving_syntax` keeps what the peer has.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from enum import Enum

from .syntaxes import DECODABLE, EXPLICIT, IMPLICIT, LOSSLESS_TARGETS, LOSSY_TARGETS, NATIVE, TARGETS, name

ANY = "*"  # a peer that takes whatever is stored (DICOMweb ``transfer-syntax=*``)


class Action(Enum):
    AS_STORED = "as stored"
    TRANSCODE = "transcode"
    CANNOT = "cannot"


@dataclass(frozen=True)
class Plan:
    """The outcome for one instance: what to do, the syntax to send, or why not."""

    action: Action
    syntax: str = ""
    reason: str = ""

    @property
    def lossy(self) -> bool:
        """Does following this plan lose data (a lossy target)?"""
        return self.action is Action.TRANSCODE and self.syntax in LOSSY_TARGETS

    def __str__(self) -> str:
        if self.action is Action.CANNOT:
            return f"cannot: {self.reason}"
        return f"{self.action.value} {self.syntax}"


def can_produce(stored: str, target: str) -> bool:
    """Can the node turn data stored in *stored* into *target* (lossless or lossy)?"""
    return stored == target or (stored in DECODABLE and target in TARGETS)


def lossless_from(stored: str, target: str) -> bool:
    """Can *target* be produced from *stored* without losing anything more?

    A lossy stored instance decoded to a lossless target keeps its decoded
    values exactly (and stays marked lossy): that is not a further loss.
    """
    return stored == target or (stored in DECODABLE and target in LOSSLESS_TARGETS)


def plan(stored: str, accepted: Sequence[str]) -> Plan:
    """What to send for an instance stored in *stored* to a peer accepting *accepted*.

    *accepted* is in the peer's order of preference and may contain
    :data:`ANY`.  See the module docstring for the rules.
    """
    if stored in accepted or ANY in accepted:
        return Plan(Action.AS_STORED, stored)
    for syntax in accepted:
        if syntax != stored and lossless_from(stored, syntax):
            return Plan(Action.TRANSCODE, syntax)
    for syntax in accepted:
        if syntax in LOSSY_TARGETS and can_produce(stored, syntax):
            return Plan(Action.TRANSCODE, syntax)
    if stored not in DECODABLE:
        why = f"the instance is stored as {name(stored)}, which the node cannot decode"
    else:
        why = f"the node cannot produce any of {', '.join(accepted) or 'nothing'} from {name(stored)}"
    return Plan(Action.CANNOT, reason=why)


def requestor_syntaxes(stored: str) -> list[str]:
    """Transfer syntaxes to propose for an instance stored in *stored*, one context each, best first."""
    out = [stored]
    for syntax in (EXPLICIT, IMPLICIT):
        if syntax not in out:
            out.append(syntax)
    return out


def acceptor_syntax(proposed: Sequence[str], stored: Collection[str] | None = None) -> str | None:
    """The syntax to accept in one storage context the peer proposed with *proposed* (its order).

    *stored* is the set of stored syntaxes of the instances that may be sent
    in this context, when the door knows it; None means "any".  The choice:
    a proposed stored syntax into which every other stored instance can be
    produced losslessly (so the stored bytes go out when they can); else the
    peer's first choice into which every stored instance can be produced
    losslessly; else the first lossy one the node can write; else the first
    one the node knows (only instances stored in it can then be sent).
    None when nothing proposed is a transfer syntax the node knows.
    """

    def serves_all(syntax: str) -> bool:
        if stored is None:
            return syntax in LOSSLESS_TARGETS
        return all(lossless_from(s, syntax) for s in stored)

    if stored:
        for syntax in proposed:
            if syntax in stored and serves_all(syntax):
                return syntax
    for syntax in proposed:
        if serves_all(syntax):
            return syntax
    for syntax in proposed:
        if syntax in LOSSY_TARGETS:
            return syntax
    for syntax in proposed:
        if syntax in DECODABLE:
            return syntax
    return None


def receiving_syntax(proposed: Sequence[str], supported: Collection[str]) -> str | None:
    """The syntax to accept in a storage context a peer will C-STORE on, *proposed* in its order.

    The peer's first choice among *supported* when it is a compressed
    (encapsulated) syntax: a modality that lists the syntax its images are
    in first sends them unchanged, and the node stores them as received
    instead of making the sender decompress.  None when the first choice is
    native (uncompressed): the node's own order stands, Explicit VR Little
    Endian first, as DCMTK's storescp does, since it has the same pixels as
    Implicit VR and keeps the VRs of private elements.
    """
    for syntax in proposed:
        if syntax in supported:
            return None if syntax in NATIVE else syntax
    return None
