"""WS-Management SOAP envelopes for the lab server: parse a request's header and body, build responses and faults.

Only what a WinRM listener needs for the PowerShell (PSRP) shell resource: Create, Command, Send, Receive,
Signal, Delete (MS-WSMV 3.1.4). Every response carries `wsa:RelatesTo` = the request's `wsa:MessageID`
(pypsrp rejects a response without it).
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import escape, quoteattr

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "wsa": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "wsman": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "wsmv": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "wst": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "wsmanfault": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "pwsh": "http://schemas.microsoft.com/powershell",
}

ACTION_BASE_TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
ACTION_BASE_SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
ACTIONS = {
    ACTION_BASE_TRANSFER + "Create": "Create",
    ACTION_BASE_TRANSFER + "Delete": "Delete",
    ACTION_BASE_TRANSFER + "Get": "Get",
    ACTION_BASE_SHELL + "Command": "Command",
    ACTION_BASE_SHELL + "Send": "Send",
    ACTION_BASE_SHELL + "Receive": "Receive",
    ACTION_BASE_SHELL + "Signal": "Signal",
}
RESPONSE_ACTIONS = {
    "Create": ACTION_BASE_TRANSFER + "CreateResponse",
    "Delete": ACTION_BASE_TRANSFER + "DeleteResponse",
    "Command": ACTION_BASE_SHELL + "CommandResponse",
    "Send": ACTION_BASE_SHELL + "SendResponse",
    "Receive": ACTION_BASE_SHELL + "ReceiveResponse",
    "Signal": ACTION_BASE_SHELL + "SignalResponse",
}
POWERSHELL_URI_PREFIX = "http://schemas.microsoft.com/powershell/"

SIGNAL_TERMINATE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/terminate"
SIGNAL_PS_CTRL_C = "powershell/signal/ctrl_c"
SIGNAL_CTRL_C = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/signal/ctrl_c"

COMMAND_STATE_DONE = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Done"
COMMAND_STATE_RUNNING = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/CommandState/Running"

# WSManFault codes (winerror.h / MS-WSMV) used by the lab.
FAULT_OPERATION_TIMEOUT = 2150858793  # the long-poll Receive ended without data; clients retry
FAULT_INVALID_SELECTORS = 2150858843  # no such shell
FAULT_ACTION_NOT_SUPPORTED = 2150858754
FAULT_INTERNAL = 2150858752
FAULT_ACCESS_DENIED = 5
# SOAP code and WS-Management subcode Windows sends with each fault (MS-WSMV 2.2.4.8 / DSP0226 14.6).
_FAULT_SUBCODES = {
    FAULT_OPERATION_TIMEOUT: ("s:Receiver", "w:TimedOut"),
    FAULT_INVALID_SELECTORS: ("s:Sender", "w:InvalidSelectors"),
    FAULT_ACTION_NOT_SUPPORTED: ("s:Sender", "w:ActionNotSupported"),
    FAULT_ACCESS_DENIED: ("s:Sender", "w:AccessDenied"),
}


def shell_not_found(shell_id: str | None) -> str:
    """What Windows says (fault 2150858843) for a ShellId it does not have: never created, deleted, or
    deleted by the idle timeout."""
    return (f"The request for the Windows Remote Shell with ShellId {shell_id or ''} failed because the shell was "
            "not found on the server. Possible causes are: the specified ShellId is incorrect or the shell no "
            "longer exists on the server. Provide the correct ShellId or create a new shell and retry the "
            "operation.")


def format_duration(seconds: float) -> str:
    """Seconds as an xs:duration the way WinRM writes it, e.g. `PT7200.000S`."""
    return f"PT{seconds:.3f}S"

_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


class SoapError(Exception):
    """A request that is not well-formed WS-Management; answered with a WSManFault."""

    def __init__(self, message: str, code: int = FAULT_ACTION_NOT_SUPPORTED) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class WsmanRequest:
    """The parts of a WS-Management request the lab uses."""

    action: str  # short name: Create, Command, Send, Receive, Signal, Delete, Get
    action_uri: str
    resource_uri: str
    message_id: str
    shell_id: str | None
    operation_timeout: float  # seconds
    max_envelope_size: int
    body: ET.Element


def parse_duration(text: str | None, default: float) -> float:
    """`PT20S`/`PT1M30.5S` -> seconds."""
    match = _DURATION.match((text or "").strip())
    if not match:
        return default
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def parse_request(data: bytes) -> WsmanRequest:
    try:
        envelope = ET.fromstring(data)
    except ET.ParseError as err:
        raise SoapError(f"the request is not XML: {err}") from None
    header = envelope.find("s:Header", NS)
    body = envelope.find("s:Body", NS)
    if header is None or body is None:
        raise SoapError("the request is not a SOAP envelope (no s:Header/s:Body)")
    action_uri = (header.findtext("wsa:Action", "", NS) or "").strip()
    message_id = (header.findtext("wsa:MessageID", "", NS) or "").strip()
    shell_id = None
    for selector in header.findall("wsman:SelectorSet/wsman:Selector", NS):
        if selector.get("Name") == "ShellId":
            shell_id = (selector.text or "").strip()
    try:
        max_envelope = int(header.findtext("wsman:MaxEnvelopeSize", "153600", NS) or 153600)
    except ValueError:
        max_envelope = 153600
    return WsmanRequest(
        action=ACTIONS.get(action_uri, action_uri.rsplit("/", 1)[-1]),
        action_uri=action_uri,
        resource_uri=(header.findtext("wsman:ResourceURI", "", NS) or "").strip(),
        message_id=message_id,
        shell_id=shell_id,
        operation_timeout=parse_duration(header.findtext("wsman:OperationTimeout", None, NS), 60.0),
        max_envelope_size=max_envelope,
        body=body,
    )


def _envelope(action_uri: str, relates_to: str, body: str, extra_header: str = "") -> bytes:
    return (
        '<s:Envelope xmlns:s="{s}" xmlns:wsa="{wsa}" xmlns:wsman="{wsman}" xmlns:rsp="{rsp}" xmlns:wst="{wst}">'
        "<s:Header>"
        "<wsa:Action>{action}</wsa:Action>"
        "<wsa:MessageID>uuid:{mid}</wsa:MessageID>"
        "<wsa:RelatesTo>{relates}</wsa:RelatesTo>"
        "<wsa:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</wsa:To>"
        "{extra}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).format(action=escape(action_uri), mid=str(uuid.uuid4()).upper(), relates=escape(relates_to),
             extra=extra_header, body=body, **NS).encode("utf-8")


def response(request: WsmanRequest, body: str = "") -> bytes:
    """A success response to `request` with this (already XML) body."""
    action = RESPONSE_ACTIONS.get(request.action, request.action_uri + "Response")
    return _envelope(action, request.message_id, body)


def create_response(request: WsmanRequest, shell_id: str, resource_uri: str, address: str,
                    idle_timeout_s: float) -> bytes:
    """The Create answer: pypsrp takes the ShellId for later requests from the ResourceCreated selector set;
    `rsp:IdleTimeOut` tells the client how long the shell lives without requests, as Windows does."""
    body = (
        "<wst:ResourceCreated>"
        f"<wsa:Address>{escape(address)}</wsa:Address>"
        "<wsa:ReferenceParameters>"
        f"<wsman:ResourceURI>{escape(resource_uri)}</wsman:ResourceURI>"
        f'<wsman:SelectorSet><wsman:Selector Name="ShellId">{shell_id}</wsman:Selector></wsman:SelectorSet>'
        "</wsa:ReferenceParameters></wst:ResourceCreated>"
        f"<rsp:Shell><rsp:ShellId>{shell_id}</rsp:ShellId>"
        f"<rsp:ResourceUri>{escape(resource_uri)}</rsp:ResourceUri>"
        f"<rsp:IdleTimeOut>{format_duration(idle_timeout_s)}</rsp:IdleTimeOut>"
        "<rsp:InputStreams>stdin pr</rsp:InputStreams><rsp:OutputStreams>stdout</rsp:OutputStreams>"
        "</rsp:Shell>"
    )
    return response(request, body)


def command_response(request: WsmanRequest, command_id: str) -> bytes:
    return response(request, f"<rsp:CommandResponse><rsp:CommandId>{escape(command_id)}</rsp:CommandId>"
                             "</rsp:CommandResponse>")


def receive_response(request: WsmanRequest, stream: str, command_id: str | None, data_b64: str,
                     done: bool) -> bytes:
    cid = f" CommandId={quoteattr(command_id)}" if command_id else ""
    state = ""
    if command_id:
        state_uri = COMMAND_STATE_DONE if done else COMMAND_STATE_RUNNING
        state = f"<rsp:CommandState{cid} State={quoteattr(state_uri)}/>"
    stream_xml = f"<rsp:Stream Name={quoteattr(stream)}{cid}>{data_b64}</rsp:Stream>" if data_b64 else ""
    return response(request, f"<rsp:ReceiveResponse>{stream_xml}{state}</rsp:ReceiveResponse>")


def fault(relates_to: str, code: int, message: str, *, machine: str = "") -> bytes:
    """A WSManFault (sent with HTTP 500); pypsrp raises it as `WSManFaultError` with `.code`."""
    soap_code, subcode = _FAULT_SUBCODES.get(code, ("s:Receiver", "w:InternalError"))
    body = (
        f"<s:Fault><s:Code><s:Value>{soap_code}</s:Value>"
        f"<s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code>"
        f'<s:Reason><s:Text xml:lang="en-US">{escape(message)}</s:Text></s:Reason>'
        f'<s:Detail><f:WSManFault xmlns:f="{NS["wsmanfault"]}" Code="{code}" Machine={quoteattr(machine)}>'
        f"<f:Message>{escape(message)}</f:Message></f:WSManFault></s:Detail></s:Fault>"
    )
    return _envelope("http://schemas.dmtf.org/wbem/wsman/1/wsman/fault", relates_to,
                     body.replace("<s:Fault>", '<s:Fault xmlns:w="http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd">',
                                  1))
