"""Checks that ship with mailserverd but talk to other programs: plugins.

Each module here is a check of the staged chain (mailserverd/checks/base.py,
documented in docs/checks.md) that registers itself by name on import and is
also published as an entry point of group "mailserverd.checks" (setup.cfg), so

    [checks]
    chain = check.hops, check.clamd

loads plugins/clamd.py. Modules:

    clamd.py         check.clamd: ClamAV's clamd over INSTREAM
    spamd.py         check.spamd: SpamAssassin's spamd over the spamc protocol
    daemonclient.py  one request/reply exchange with a local daemon, fail-safe options
"""
