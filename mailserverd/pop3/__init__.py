"""POP3 (RFC 1939) with CAPA (RFC 2449), STLS (RFC 2595), AUTH (RFC 5034) and
response codes (RFC 2449 8, RFC 3206).

protocol.POP3Machine is the I/O-free state machine; server.build_factory
gives the service tree its Twisted factory.
"""
