"""The identity of an action we did not write, read from its definition through the REST API
of ``owdedup serve``, as the conductor reads it on OpenWhisk (issue 10, item 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from owdedup.runtime.errors import ConfigError, NotFoundError
from owdedup.runtime.platform import get_entity
from owdedup.runtime.wrapped.identity import action_fingerprint
from owdedup.serve.server import DevServer
from tests.serve.conftest import AUTH, Client, params

CODE = "def main(params):\n    return {'n': len(params)}\n"


def env_of(server: DevServer) -> dict[str, str]:
    return {"__OW_API_HOST": server.url, "__OW_API_KEY": AUTH, "__OW_NAMESPACE": "guest"}


class CountingFetch:
    """get_entity, counting the reads that carry the code."""

    def __init__(self) -> None:
        self.code_reads = 0

    def __call__(self, path: str, env: Mapping[str, str], purpose: str) -> dict[str, Any] | None:
        if "code=false" not in path and "/actions/" in path:
            self.code_reads += 1
        return get_entity(path, env, purpose)


def test_code_and_bound_parameters_change_the_identity_ignored_ones_do_not(
    server: DevServer, client: Client
) -> None:
    env, fetch = env_of(server), CountingFetch()
    client.action("myfunction", CODE, parameters=params({"threshold": 3, "token": "a"}))
    first = action_fingerprint("myfunction", env, ["token"], fetch=fetch)
    assert action_fingerprint("myfunction", env, ["token"], fetch=fetch) == first
    assert fetch.code_reads == 1  # a warm conductor reads the code once per version
    client.action("myfunction", CODE, parameters=params({
        "threshold": 3, "token": "a", "owdedup_records_password": "never hashed"}))
    assert action_fingerprint("myfunction", env, ["token"], fetch=fetch) == first  # ours

    client.action("myfunction", CODE, parameters=params({"threshold": 3, "token": "b"}))
    assert action_fingerprint("myfunction", env, ["token"], fetch=fetch) == first  # ignored

    client.action("myfunction", CODE, parameters=params({"threshold": 4, "token": "b"}))
    bound = action_fingerprint("myfunction", env, ["token"], fetch=fetch)
    assert bound != first

    client.action("myfunction", CODE + "# v2\n", parameters=params({"threshold": 4,
                                                                     "token": "b"}))
    updated = action_fingerprint("myfunction", env, ["token"], fetch=fetch)
    assert updated not in (first, bound)
    # the same definition again (a new version) hashes like the same definition
    client.action("myfunction", CODE, parameters=params({"threshold": 3, "token": "c"}))
    assert action_fingerprint("myfunction", env, ["token"], fetch=fetch) == first


def test_package_parameters_count_and_sequences_follow_their_components(
    server: DevServer, client: Client
) -> None:
    env = env_of(server)
    assert client.put("packages/tools", {"parameters": params({"model": "a"})}).status == 200
    client.action("tools/f", CODE)
    packaged = action_fingerprint("tools/f", env)
    client.put("packages/tools", {"parameters": params({"model": "b"})}, overwrite=True)
    assert action_fingerprint("tools/f", env) != packaged

    client.action("g", CODE)
    sequence = {"exec": {"kind": "sequence", "components": ["/guest/tools/f", "/guest/g"]}}
    assert client.put("actions/both", sequence).status == 200
    before = action_fingerprint("both", env)
    client.action("g", CODE + "# changed\n")
    assert action_fingerprint("both", env) != before  # the sequence itself did not change


def test_a_missing_action_and_a_missing_key_are_named(server: DevServer) -> None:
    with pytest.raises(NotFoundError, match="wrapped action nothing does not exist"):
        action_fingerprint("nothing", env_of(server))
    without_key = {k: v for k, v in env_of(server).items() if k != "__OW_API_KEY"}
    with pytest.raises(ConfigError, match="provide-api-key"):
        action_fingerprint("myfunction", without_key)
