"""JMAP (RFC 8620 core, RFC 8621 mail) over the http listener.

    session.py   GET /.well-known/jmap: the session resource (RFC 8620 2)
    api.py       POST /jmap/api: request parsing, limits, dispatch, result
                 references (3.7), request-level (3.6.1) and method-level (3.6.2) errors
    core.py      Core/echo and the argument checks shared by /get /changes /query /set
    state.py     state strings from the store's change log
    mailbox.py   Mailbox/get /changes /query /set (RFC 8621 2)
    email.py     Email/get /changes /query; emailset.py Email/set; emailimport.py
                 Email/import; emailparse.py parses headers and bodies (RFC 8621 4)
    thread.py    Thread/get (RFC 8621 3)
    blobs.py     blob ids, upload and download (RFC 8620 6)
    eventsource.py  GET /jmap/eventsource push (RFC 8620 7.3)
    web.py       the twisted.web resources and HTTP Basic authentication

Ids: accounts "a<id>", mailboxes "m<id>", emails "e<id>" (one per message row;
a COPY is a second mailbox of the same Email), threads "t<id>" (every thread
holds one email: the store does not group messages into threads yet), blobs
"b<id>" (the whole message), "b<id>.<partId>" (a decoded body part) and
"u<sha256>" (an upload).
"""
