"""[checks] chain and [check.NAME] sections: how the daemon builds its check chain."""

from __future__ import annotations

import pytest

from mailserverd import config
from mailserverd.checks.base import Check, CheckContext, HopCountCheck, build_chain, register_builtin
from mailserverd.service import build_checks


def write(tmp_path, text):
    path = tmp_path / "m.conf"
    path.write_text("[server]\ndata_dir = data\n" + text)
    return str(path)


class ContextProbe(Check):
    name = "check.test-context-probe"

    def __init__(self, context, colour="none"):
        self.context = context
        self.colour = colour


register_builtin(ContextProbe.name, ContextProbe)


def test_default_chain_starts_with_the_hop_counter(tmp_path):
    """Without a [checks] section the chain is built from the default [checks] chain (the
    filters of issue 13 join it as they land), the built-in hop counter first."""
    settings = config.load_settings(write(tmp_path, ""))
    chain = build_checks(settings, None, None)
    assert len(chain.checks) == len(settings.checks.chain)
    assert type(chain.checks[0]) is HopCountCheck and "check.antivirus" in settings.checks.chain


def test_check_section_options_reach_the_factory(tmp_path):
    """[check.NAME] keys are passed to that check as keyword options."""
    settings = config.load_settings(write(tmp_path, "[checks]\nchain = check.hops, check.test-context-probe\n"
                                                    "[check.hops]\nlimit = 7\n"
                                                    "[check.test-context-probe]\ncolour = blue\n"))
    hops, probe = build_checks(settings, "STORE", "REACTOR").checks
    assert hops.limit == 7
    assert probe.colour == "blue"
    assert isinstance(probe.context, CheckContext)
    assert probe.context.settings is settings and probe.context.store == "STORE"
    assert probe.context.reactor == "REACTOR"


def test_factory_without_context_parameter_gets_none():
    """Checks that do not declare `context` are built with their options only."""
    chain = build_chain(["check.hops"], {"check.hops": {"limit": "3"}}, CheckContext())
    assert chain.checks[0].limit == 3


@pytest.mark.parametrize("text, expected", [
    ("[checks]\nchain = check.nonexistent\n", "[checks] chain: unknown check 'check.nonexistent'"),
    ("[checks]\nchain = check.hops\n[check.hops]\ncolour = red\n", "[checks] chain:"),
])
def test_bad_chain_is_one_line_error(tmp_path, text, expected):
    """An unknown check or an option it does not take stops start-up with one line."""
    settings = config.load_settings(write(tmp_path, text))
    with pytest.raises(config.ConfigError) as info:
        build_checks(settings, None, None)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, expected", [
    ("[checks]\nchain = check.hops, check.hops\n", "[checks] chain: a check is named twice"),
    ("[checks]\nchain = check hops\n", "[checks] chain: not a check name"),
    ("[check.spamd]\nhost = x\n", "[check.spamd]: options for a check that is not in [checks] chain"),
])
def test_bad_checks_config(tmp_path, text, expected):
    """Malformed chains and orphan [check.NAME] sections are refused when the file is read."""
    with pytest.raises(config.ConfigError) as info:
        config.load_settings(write(tmp_path, text))
    assert expected in str(info.value)
