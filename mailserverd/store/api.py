"""The store's interface as protocol code sees it.

Protocol packages (smtp, imap, pop3, jmap) import only this module and
mailserverd.store.service.AsyncStore; they never see SQLAlchemy or RocksDB.
Every AsyncStore method returns a Deferred and runs its blocking work on the
store's own thread pool, never on the reactor thread.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

# RFC 6154 special-use mailboxes every new account gets, besides INBOX.
SPECIAL_USE = {
    "Drafts": "\\Drafts",
    "Sent": "\\Sent",
    "Junk": "\\Junk",
    "Trash": "\\Trash",
    "Archive": "\\Archive",
}
DEFAULT_MAILBOXES = ("INBOX",) + tuple(SPECIAL_USE)

# RFC 3501 2.3.2 system flags we store as columns; keywords are free-form.
SYSTEM_FLAGS = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")


class StoreError(Exception):
    """A request the store refuses; the message is safe to show a client."""


class NoSuchMailbox(StoreError):
    pass


class MailboxExists(StoreError):
    pass


class OverQuota(StoreError):
    pass


@dataclasses.dataclass(frozen=True)
class Account:
    """An authenticated or resolved mail account (the twisted.cred avatar)."""

    id: int
    address: str
    shard: int
    quota: int = 0  # bytes; 0 = unlimited


@dataclasses.dataclass(frozen=True)
class Mailbox:
    id: int
    name: str  # "/"-separated hierarchy, stored as UTF-8 (not modified UTF-7)
    special_use: Optional[str]
    uidvalidity: int
    uidnext: int
    subscribed: bool
    highestmodseq: int = 0
    # Counts, filled by list_mailboxes/get_mailbox.
    exists: int = 0
    unseen: int = 0
    size: int = 0


@dataclasses.dataclass(frozen=True)
class MessageRef:
    """One message's membership in one mailbox."""

    mailbox_id: int
    uid: int
    message_id: int  # the message row; stable while the message lives
    size: int  # octets of the full message as delivered (prepend + body)
    flags: frozenset  # system flags and keywords, e.g. {"\\Seen", "$Junk"}
    modseq: int
    received_at: float  # unix time of delivery (IMAP INTERNALDATE)


@dataclasses.dataclass(frozen=True)
class DeliveryTarget:
    """Where one copy of a delivered message goes.

    prepend: header lines the server adds for this copy (Return-Path,
    Received, Authentication-Results), CRLF-terminated bytes, stored beside
    the immutable body blob so the body is never rewritten.
    """

    account: Account
    mailbox: str = "INBOX"  # a mailbox name, e.g. "INBOX" or "Junk"
    prepend: bytes = b""
    flags: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class CopyResult:
    """What COPY/MOVE did (RFC 4315 COPYUID): the destination's UIDVALIDITY and
    (source uid, new uid) pairs in ascending source order."""

    uidvalidity: int
    pairs: list


class MailStore:
    """What AsyncStore offers protocol code. Every method returns a Deferred.

    Directory:
      is_local_domain(domain) -> bool
      resolve_recipient(address) -> list[Account]   aliases and catch-all expanded;
                                                    [] for an unknown user
      resolve_targets(address) -> (list[Account], list[str])  the same, and the
                                                    remote addresses its aliases forward to
      sender_addresses(account) -> frozenset[str]   own address + aliases that
                                                    deliver only to it (lower case)
    Mail (account-scoped: an Account can only reach its own rows):
      deliver(body, targets, received_at=None) -> list[MessageRef]
            fires only after the blob and rows are durable (group commit)
      append(account, mailbox_name, body, flags=(), received_at=None) -> MessageRef
      list_mailboxes(account) -> list[Mailbox]
      get_mailbox(account, name) -> Mailbox           NoSuchMailbox if absent
      list_messages(account, mailbox_id) -> list[MessageRef]   ordered by uid
      read_message(account, message_id) -> bytes      prepend + body
      store_flags(account, mailbox_id, uids, flags, mode) -> list[MessageRef]
            mode is "add", "remove" or "replace"
      expunge(account, mailbox_id, uids) -> list[int]    the UIDs removed
      read_messages(account, message_ids) -> dict[int, bytes]
            prepend + body by message id; ids of other accounts are absent; a
            message expunged meanwhile comes from a bounded cache (RFC 2180 4.1.3)
      message_summaries(account, message_ids) -> dict[int, dict]
            stored columns subject, from_addr, to_addr, cc_addr, sent_at (unix
            time or None), message_id_header, in_reply_to, references (for SORT/THREAD)
      message_structures(account, message_ids) -> dict[int, (bytes, bytes)]
            IMAP ENVELOPE and BODYSTRUCTURE as computed at delivery, for FETCH;
            messages stored before they were kept are absent
    Mailboxes (RFC 3501 6.3; names are "/"-separated str, INBOX case-insensitive;
    writes run on the writer thread and notify the account's subscribers):
      create_mailbox(account, name, special_use=None) -> Mailbox
            MailboxExists if taken; StoreError for an invalid name; not subscribed
            unless the name was subscribed before it existed; fresh UIDVALIDITY,
            larger than any the name had before (RFC 3501 2.3.1.1)
      delete_mailbox(account, name) -> None
            NoSuchMailbox; StoreError for INBOX. Its messages are expunged (blobs
            freed with their last reference), a Mailbox "destroyed" change is
            logged, all in one transaction; children stay (RFC 3501 6.3.4)
      rename_mailbox(account, old, new) -> None
            old and every "old/..." child become "new/..." (ids and UIDVALIDITY
            kept); MailboxExists if new or a child's new name exists; NoSuchMailbox.
            INBOX (RFC 3501 6.3.5): creates new holding INBOX's messages (new UIDs,
            new UIDVALIDITY) and leaves INBOX empty; its children stay
      set_subscribed(account, name, subscribed) -> None
            any name may be subscribed, existing or not (RFC 3501 6.3.6);
            unsubscribing an unknown name is a no-op
      list_subscriptions(account) -> list[str]        subscribed names, existing or not
    Copies (RFC 3501 6.4.7, RFC 4315 COPYUID, RFC 6851 MOVE):
      copy_messages(account, mailbox_id, uids, dest_name) -> CopyResult
            pairs (source uid, new uid) in ascending source order; UIDs not in the
            mailbox are skipped; flags copied; new modseqs. NoSuchMailbox for a
            missing dest; OverQuota if the copies' bytes exceed the quota
      move_messages(account, mailbox_id, uids, dest_name) -> CopyResult
            copy + expunge of the source in one transaction; usage unchanged
    Changes (RFC 7162 CONDSTORE/QRESYNC):
      mailbox_changes(account, mailbox_id, since_modseq)
            -> (highest_modseq, changed: list[MessageRef], vanished_uids: list[int])
            refs of the mailbox with modseq > since (by uid); UIDs removed from it
            after since, ascending
      highest_modseq(account) -> int
      usage(account) -> int     bytes counted against quota (each copy counts)
    """
