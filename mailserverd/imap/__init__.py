"""IMAP4rev1 protocol core, without I/O (RFC 3501, RFC 9051 and extensions).

  parser.CommandParser   bytes in, events out: CommandReady(command),
                         ContinuationNeeded, CommandError, ClientLine
  framing.ParserLimits   line, literal and APPEND size limits
  commands               the typed command dataclasses
  search.SearchKey       SEARCH key trees; fetch.FetchAtt / Section FETCH items
  sequence.SequenceSet   sequence sets with "*" and "$"
  mutf7                  modified UTF-7 names and mailbox-name validation
  responses              rendering of server responses and IMAP data

FETCH data from message bytes (ENVELOPE, BODYSTRUCTURE, BODY[section],
BINARY) lives in mailserverd.mime.imapstructure and mailserverd.mime.imapsection.
"""
