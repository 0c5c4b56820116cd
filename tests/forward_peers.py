"""Peers for the gateway and store-and-forward tests: a pynetdicom storage SCP that refuses."""

from __future__ import annotations

import threading

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.sop_class import CTImageStorage

from tests.harness import free_port


class RefusingSCP:
    """A pynetdicom storage SCP run by the test: CT Image Storage only, answering *status*.

    Any other SOP class gets no presentation context (the remote "does not
    support" it); CT instances get *status* (0x0000 keeps them in ``received``,
    once per time received) after *delay* seconds (a slow remote; one that
    keeps its answers, with a long delay, until it is stopped).
    """

    def __init__(self, ae_title: str = "REFUSER", status: int = 0xA900, delay: float = 0.0) -> None:
        self.ae_title = ae_title
        self.port = free_port()
        self.status = status
        self.delay = delay
        self.received: list[str] = []
        self.calling: list[str] = []
        self._stopped = threading.Event()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(CTImageStorage, ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )

    def _store(self, event) -> Dataset:
        self.calling.append(event.assoc.requestor.ae_title)
        if self.delay:
            self._stopped.wait(self.delay)
        rsp = Dataset()
        rsp.Status = self.status
        if self.status == 0:
            self.received.append(str(event.request.AffectedSOPInstanceUID))
        return rsp

    def remote(self, name: str = "refuser", **extra) -> dict:
        """This peer as a ``[[remotes]]`` table."""
        return {"name": name, "ae_title": self.ae_title, "host": "127.0.0.1", "port": self.port, **extra}

    def stop(self) -> None:
        self._stopped.set()
        self.server.shutdown()
