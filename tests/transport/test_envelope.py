"""Text-rendered WS-Man envelopes (fleetctl/transport/envelope.py): the same header pypsrp builds, element by
element, with every value escaped; the answer's message id checked; faults and non-XML answers typed."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from pypsrp.exceptions import WinRMError, WinRMTransportError, WSManFaultError
from pypsrp.wsman import NAMESPACES, OptionSet, SelectorSet, WSMan, WSManAction

from fleetctl.transport.envelope import LeanWSMan

SHELL_URI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"


def canonical(element: ET.Element) -> Any:
    """An element as (tag, attributes, text, children), for comparing two headers."""
    return (element.tag, sorted(element.attrib.items()), (element.text or "").strip(),
            [canonical(child) for child in element])


class Canned:
    """A transport answering every request with `answer(request)`."""

    endpoint = "https://10.0.0.5:5986/wsman"

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.sent: list[bytes] = []

    def send(self, message: bytes, **kwargs: Any) -> bytes:
        self.sent.append(message)
        return self.answer(message)

    def close(self) -> None:
        pass


def lean(answer: Any = None) -> LeanWSMan:
    wsman = LeanWSMan("10.0.0.5", username="u", password="p", ssl=True, auth="basic")
    wsman.transport = Canned(answer or (lambda m: b""))  # type: ignore[assignment]
    return wsman


def sets() -> tuple[OptionSet, SelectorSet]:
    options = OptionSet()
    options.add_option("protocolversion", "2.3", {"MustComply": "true"})
    options.add_option("odd", 'a<b & "c"')
    selectors = SelectorSet()
    selectors.add_option("ShellId", "7A1F-<&>")
    return options, selectors


def test_the_header_is_the_one_pypsrp_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    wsman = lean()
    options, selectors = sets()
    fixed = uuid.UUID("12345678-1234-5678-1234-567812345678")
    monkeypatch.setattr(uuid, "uuid4", lambda: fixed)
    message_id, theirs = WSMan._create_header(wsman, WSManAction.CREATE, SHELL_URI, options, selectors, 20)
    mine_id, xml = wsman.render(WSManAction.CREATE, SHELL_URI, None, options, selectors, 20, message_id=message_id)
    envelope = ET.fromstring(xml)
    header = envelope.find("s:Header", NAMESPACES)
    assert header is not None and mine_id == message_id
    assert canonical(header) == canonical(theirs)
    assert envelope.find("s:Body", NAMESPACES) is not None


def test_the_body_is_pypsrps_element_and_values_are_escaped() -> None:
    body = ET.Element(f"{{{NAMESPACES['rsp']}}}Receive")
    ET.SubElement(body, f"{{{NAMESPACES['rsp']}}}DesiredStream", CommandId="C-1").text = "stdout <&>"
    _, xml = lean().render(WSManAction.RECEIVE, SHELL_URI, body, *sets())
    parsed = ET.fromstring(xml)  # well-formed, whatever the values held
    stream = parsed.find("s:Body/rsp:Receive/rsp:DesiredStream", NAMESPACES)
    assert stream is not None and stream.text == "stdout <&>" and stream.get("CommandId") == "C-1"
    odd = parsed.find("s:Header/wsman:OptionSet/wsman:Option[@Name='odd']", NAMESPACES)
    assert odd is not None and odd.text == 'a<b & "c"'


def answer_for(message: bytes, relates_to: str | None = None) -> bytes:
    sent = ET.fromstring(message).findtext("s:Header/wsa:MessageID", "", NAMESPACES)
    return (f'<s:Envelope xmlns:s="{NAMESPACES["s"]}" xmlns:wsa="{NAMESPACES["wsa"]}"><s:Header>'
            f"<wsa:RelatesTo>{relates_to or sent}</wsa:RelatesTo></s:Header><s:Body/></s:Envelope>").encode()


def test_an_answer_to_this_request_is_returned_and_one_to_another_refused() -> None:
    answer = lean(answer_for).invoke(WSManAction.DELETE, SHELL_URI, None)
    assert answer.find("s:Body", NAMESPACES) is not None
    with pytest.raises(WinRMError, match="relates to message uuid:OTHER"):
        lean(lambda m: answer_for(m, "uuid:OTHER")).invoke(WSManAction.DELETE, SHELL_URI, None)


def test_a_garbled_answer_is_a_winrm_error() -> None:
    with pytest.raises(WinRMError, match="not XML"):
        lean(lambda m: b"<s:Envelope><unclosed").invoke(WSManAction.DELETE, SHELL_URI, None)


def test_a_fault_is_a_wsman_fault_and_a_status_without_one_stays_a_transport_error() -> None:
    fault = (f'<s:Envelope xmlns:s="{NAMESPACES["s"]}" xmlns:wsmanfault="{NAMESPACES["wsmanfault"]}"><s:Body>'
             "<s:Fault><s:Code><s:Value>s:Sender</s:Value></s:Code><s:Reason><s:Text>gone</s:Text></s:Reason>"
             '<s:Detail><wsmanfault:WSManFault Code="2150858843"><wsmanfault:Message>no shell'
             "</wsmanfault:Message></wsmanfault:WSManFault></s:Detail></s:Fault></s:Body></s:Envelope>")

    def raising(text: str) -> Any:
        def send(message: bytes) -> bytes:
            raise WinRMTransportError("http", 500, text)
        return send

    with pytest.raises(WSManFaultError) as caught:
        lean(raising(fault)).invoke(WSManAction.RECEIVE, SHELL_URI, None)
    assert str(caught.value.code) == "2150858843"
    with pytest.raises(WinRMTransportError):
        lean(raising("plain text, no XML")).invoke(WSManAction.RECEIVE, SHELL_URI, None)
