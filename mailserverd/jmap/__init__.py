"""JMAP (RFC 8620 core, RFC 8621 mail, RFC 9425 quota) over the http and https listeners.

    session.py   GET /.well-known/jmap: the session resource (RFC 8620 2)
    api.py       POST /jmap/api: request parsing, limits, dispatch, result
                 references (3.7), request-level (3.6.1) and method-level (3.6.2) errors
    core.py      Core/echo and the argument checks shared by /get /changes /query /set
    filters.py   FilterOperator trees and Comparators of /query (RFC 8620 5.5)
    state.py     state strings from the store's change log
    mailbox.py   Mailbox/get /changes /query /set (RFC 8621 2)
    email.py     Email/get /changes /query (RFC 8621 4); emailparse.py parses headers
                 and bodies (4.1); emailset.py Email/set updates and destroys,
                 emailcreate.py its creations; emailimport.py Email/import /parse /copy
    querychanges.py  Email/ and Mailbox/queryChanges (RFC 8620 5.6)
    thread.py    Thread/get /changes (RFC 8621 3)
    snippet.py   SearchSnippet/get (RFC 8621 5)
    quota.py     Quota/get /changes /query /queryChanges (RFC 9425)
    blobs.py     blob ids, upload and download (RFC 8620 6)
    eventsource.py  GET /jmap/eventsource push (RFC 8620 7.3)
    web.py       the twisted.web resource: routing, Basic and Bearer authentication, limits

Ids: accounts "a<id>", mailboxes "m<id>", emails "e<id>" (one per message row;
a COPY is a second mailbox of the same Email), threads "t<id>" (every thread
holds one email: the store does not group messages into threads yet), blobs
"b<id>" (the whole message), "b<id>.<partId>" (a decoded body part),
"u<sha256>" (an upload) and "u<sha256>.<partId>" (a part of one).
"""
