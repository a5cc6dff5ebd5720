"""What the per-address connection cap counts a peer under, and the settings behind it.

The cap itself is tested against a real server in ``test_connection_limits.py``;
IPv6 peers cannot be varied there (the loopback has one IPv6 address), so the
keying is tested here as the function it is.
"""

from __future__ import annotations

import pytest

from todo_server.config import ConfigError, load_settings
from todo_server.web.client_addresses import ConnectionCounts, client_key, uncapped

SECRET = "Zq8vXk2pR7mN4tY9wB3cF6hJ1sL5dG0e"


def env(**values: str) -> dict[str, str]:
    return {"DATABASE_URL": "postgresql://app@db/todo", "BETTER_AUTH_SECRET": SECRET, **values}


def test_an_ipv6_client_is_counted_by_its_64_and_ipv4_as_itself():
    assert client_key("203.0.113.7") == "203.0.113.7"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"  # a dual-stack listener's view
    # A host picks any address in its /64 at will: all of them are one client.
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff:abcd:1:9")
    assert client_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")


def test_counts_forget_an_address_with_no_connection_left():
    counts = ConnectionCounts()
    assert [counts.add("203.0.113.7") for _ in range(3)] == [1, 2, 3]
    assert counts.add("203.0.113.8") == 1
    for _ in range(3):
        counts.remove("203.0.113.7")
    counts.remove("203.0.113.8")
    assert len(counts) == 0  # a stream of passing addresses leaves nothing behind
    assert counts.add("203.0.113.7") == 1


@pytest.mark.parametrize(
    ("host", "peers", "expected"),
    [
        ("10.0.0.5", ("10.0.0.0/8",), True),
        ("::ffff:10.0.0.5", ("10.0.0.0/8",), True),
        ("10.0.0.5", ("10.0.0.6",), False),
        ("2001:db8::5", ("2001:db8::5",), True),
        ("2001:db8::6", ("2001:db8::5",), False),
        ("203.0.113.7", ("*",), True),
        ("not-an-address", ("10.0.0.0/8",), False),
    ],
)
def test_trusted_proxies_are_not_capped(host, peers, expected):
    assert uncapped(host, peers) is expected


def test_the_limits_come_from_the_settings():
    limits = load_settings(env()).connection_limits
    assert (limits.body_deadline, limits.send_timeout) == (60.0, 60.0)
    assert limits.max_connections_per_client == 100
    assert limits.uncapped_peers == ()
    limits = load_settings(
        env(
            BODY_DEADLINE="5",
            SEND_TIMEOUT="7.5",
            MAX_CONNECTIONS_PER_CLIENT="0",
            TRUSTED_PROXIES="10.0.0.0/8",
        )
    ).connection_limits
    assert (limits.body_deadline, limits.send_timeout) == (5.0, 7.5)
    assert limits.max_connections_per_client == 0
    assert limits.uncapped_peers == ("10.0.0.0/8",)


@pytest.mark.parametrize(
    ("name", "value", "problem"),
    [
        ("BODY_DEADLINE", "0", "must be greater than 0"),
        ("BODY_DEADLINE", "-1", "must be a finite, non-negative number"),
        ("SEND_TIMEOUT", "0", "must be greater than 0"),
        ("MAX_CONNECTIONS_PER_CLIENT", "-1", "must be at least 0"),
        ("MAX_CONNECTIONS_PER_CLIENT", "lots", "must be a whole number"),
    ],
)
def test_bad_values_name_the_setting(name, value, problem):
    with pytest.raises(ConfigError, match=f"^{name}: {problem}"):
        load_settings(env(**{name: value}))


def test_a_per_client_cap_that_caps_nothing_is_pointed_out():
    def said(**values: str) -> bool:
        return any("one client address can take" in n for n in load_settings(env(**values)).notes)

    assert said(MAX_CONNECTIONS="50")  # the default 100 per client is above it
    assert not said()
    assert not said(MAX_CONNECTIONS="50", MAX_CONNECTIONS_PER_CLIENT="10")
    assert not said(MAX_CONNECTIONS="50", MAX_CONNECTIONS_PER_CLIENT="0")  # off, on purpose
