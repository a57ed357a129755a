"""Adversarial review (issues 10, 11): after a miss, a hit and an error through the wrapped
conductor in ``owdedup serve``, no bound credential nor the API key is in any activation
record (result, logs, annotations) of the conductor, its derived activations or the wrapped
action."""

from __future__ import annotations

import json
from pathlib import Path

from owdedup.serve.server import DevServer
from tests.serve.conftest import AUTH, Client
from tests.serve.test_wrap_command import environment, wrap
from tests.serve.test_wrapped_conductor import CODE, served, store

__all__ = ["served", "store"]  # the fixtures, shared

RECORDS_SECRET = "rec0rds-Passw0rd-never-shown"


def test_no_secret_reaches_any_activation_record(
    served: DevServer, tmp_path: Path, store: Path
) -> None:
    client = Client(served.url)
    client.action("myfunction", CODE)
    env = {**environment(served, tmp_path), "OWDEDUP_STORE": f"file://{store}",
           "OWDEDUP_RECORDS_PASSWORD": RECORDS_SECRET}
    del env["OWDEDUP_STORE_ACCESS_KEY"], env["OWDEDUP_STORE_SECRET_KEY"]
    code, output = wrap(env, "myfunction", "--ignore", "root")
    assert code == 0, output
    bound = json.dumps(client.request("GET", "actions/myfunction-dedup").json)
    assert RECORDS_SECRET in bound  # it was bound: the test looks for something that is there
    for key, extra in (("a.jpg", {}), ("b.jpg", {}), ("a.jpg", {"fail": True})):
        client.invoke("myfunction-dedup", {"bucket": "in", "key": key, "root": str(store),
                                           **extra}, result=True)
    listed = client.request("GET", "activations?limit=200&docs=true").json
    assert len(listed) >= 5
    seen = []
    for activation in listed:
        seen.append(json.dumps(activation))
        seen.append(client.activation(activation["activationId"], "/logs").raw.decode())
    text = "\n".join(seen)
    assert RECORDS_SECRET not in text
    assert AUTH not in text and AUTH.split(":")[1] not in text
