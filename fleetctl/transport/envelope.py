"""WS-Management envelopes written as text: `LeanWSMan` is pypsrp's `WSMan` with `invoke` rendering the SOAP
header from a template (every value escaped) instead of building ~15 ElementTree elements per request and
serializing them, and without pypsrp's eagerly formatted debug line per header. The body (pypsrp's Create,
Command, Send, Receive, Signal and Delete elements) is still pypsrp's, serialized by ElementTree; the answer is
parsed as before, since pypsrp's shell and pipeline code read it as an element, and its message id is checked.

tests/transport/test_envelope.py compares the header with the one pypsrp builds, element by element."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from pypsrp.exceptions import WinRMError, WinRMTransportError
from pypsrp.wsman import NAMESPACES, WSMan

_S, _WSA, _WSMAN, _WSMV = (NAMESPACES[k] for k in ("s", "wsa", "wsman", "wsmv"))
_OPEN = (f'<s:Envelope xmlns:s="{_S}" xmlns:wsa="{_WSA}" xmlns:wsman="{_WSMAN}" xmlns:wsmv="{_WSMV}">'
         "<s:Header>")
_ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"


def _set_text(element: str, child: str, must_understand: bool, values: list[tuple[str, str, dict[str, Any]]]) -> str:
    """An OptionSet or SelectorSet (pypsrp's `_WSManSet`) as text."""
    attr = ' s:mustUnderstand="true"' if must_understand else ""
    items = "".join(
        f"<wsman:{child} Name={quoteattr(str(name))}"
        + "".join(f" {key}={quoteattr(str(val))}" for key, val in attributes.items())
        + f">{escape(str(value))}</wsman:{child}>"
        for name, value, attributes in values)
    return f"<wsman:{element}{attr}>{items}</wsman:{element}>"


class LeanWSMan(WSMan):
    """pypsrp's WS-Man client with text-rendered headers (see the module docstring)."""

    def render(self, action: str, resource_uri: str, resource: ET.Element | None, option_set: Any = None,
               selector_set: Any = None, timeout: int | None = None, message_id: str | None = None) -> tuple[str, bytes]:
        """(message id, envelope bytes) of one request."""
        message_id = message_id or str(uuid.uuid4()).upper()
        parts = [
            _OPEN,
            f'<wsa:Action s:mustUnderstand="true">{escape(action)}</wsa:Action>',
            f'<wsmv:DataLocale s:mustUnderstand="false" xml:lang={quoteattr(self.data_locale)} />',
            f'<wsman:Locale s:mustUnderstand="false" xml:lang={quoteattr(self.locale)} />',
            f'<wsman:MaxEnvelopeSize s:mustUnderstand="true">{int(self.max_envelope_size)}</wsman:MaxEnvelopeSize>',
            f"<wsa:MessageID>uuid:{message_id}</wsa:MessageID>",
            f"<wsman:OperationTimeout>PT{escape(str(timeout or self.operation_timeout))}S</wsman:OperationTimeout>",
            f'<wsa:ReplyTo><wsa:Address s:mustUnderstand="true">{_ANONYMOUS}</wsa:Address></wsa:ReplyTo>',
            f'<wsman:ResourceURI s:mustUnderstand="true">{escape(resource_uri)}</wsman:ResourceURI>',
            f'<wsmv:SessionId s:mustUnderstand="false">uuid:{str(self.session_id).upper()}</wsmv:SessionId>',
            f"<wsa:To>{escape(self.transport.endpoint)}</wsa:To>",
        ]
        if option_set is not None:
            parts.append(_set_text(option_set.element_name, option_set.child_element_name,
                                   option_set.must_understand, option_set.values))
        if selector_set is not None:
            parts.append(_set_text(selector_set.element_name, selector_set.child_element_name,
                                   selector_set.must_understand, selector_set.values))
        parts.append("</s:Header><s:Body>")
        if resource is not None:
            parts.append(ET.tostring(resource, encoding="unicode"))
        parts.append("</s:Body></s:Envelope>")
        return message_id, "".join(parts).encode("utf-8")

    def invoke(self, action: str, resource_uri: str, resource: ET.Element | None, option_set: Any = None,
               selector_set: Any = None, timeout: int | None = None, *,
               retries_on_read_timeout: int = 0) -> ET.Element:
        message_id, xml = self.render(action, resource_uri, resource, option_set, selector_set, timeout)
        # As pypsrp: the HTTP read may take the operation timeout plus a margin.
        http_timeout = timeout + 2 if timeout else None
        try:
            response = self.transport.send(xml, retries_on_read_timeout=retries_on_read_timeout,
                                           timeout=http_timeout)
        except WinRMTransportError as err:
            try:
                raise self._parse_wsman_fault(err.response_text) from None
            except ET.ParseError:
                raise err from None
        try:
            answer = ET.fromstring(response)
        except ET.ParseError as err:
            raise WinRMError(f"the answer is not XML ({err})") from None
        relates_to = answer.findtext("s:Header/wsa:RelatesTo", "", NAMESPACES)
        if relates_to != f"uuid:{message_id}":
            raise WinRMError(f"the answer relates to message {relates_to or '(none)'}, not to uuid:{message_id}")
        return answer
