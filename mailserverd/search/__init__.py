"""Full-text search (issue 12): a Whoosh index per shard behind one query layer.

text.py turns a message into the folded texts of its searchable fields;
index.py holds one shard's Whoosh index and answers "which messages may
contain this string" (a superset, never missing one); indexer.py is the
service that drains the durable queue (store/searchqueue.py) into the
indexes off the reactor; query.py narrows an IMAP SEARCH program (and the
JMAP layer's text conditions) to candidate messages, which the caller then
verifies exactly (imap/search_eval.py). See /work/notes/search-api.md.
"""
