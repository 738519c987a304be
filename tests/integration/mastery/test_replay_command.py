"""`python -m trellis.mastery replay` on the real broker, without a worker: the activity topic
holds attempts of two learners; the learners table's changelog holds a right state for one and,
for the other, the state of one attempt fewer (a lost event). The command names that learner and
its skill and exits 1; with the right state written after it, it says equal and exits 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import TEST_TENANT
from tests.integration.mastery.test_worker import _attempt
from tests.integration.mastery.workers import worker_env
from trellis.common.codec import encode_envelope
from trellis.common.faust_app import changelog_topic_name
from trellis.common.kafka import create_producer
from trellis.common.settings import Settings
from trellis.mastery.adapters.state_codec import encode_state
from trellis.mastery.catalog import CatalogView
from trellis.mastery.replay import rebuild
from trellis.mastery.stream.app import ensure_stream_topics
from trellis.mastery.stream.tables import LEARNERS


def _replay(settings: Settings) -> tuple[int, dict[str, object]]:
    done = subprocess.run(
        [sys.executable, "-m", "trellis.mastery", "replay", "--json"],
        env=worker_env(settings, Path("unused"), 0, 0),
        capture_output=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr.decode(errors="replace")[-5_000:]
    return done.returncode, json.loads(done.stdout)


def test_replay_names_the_learner_that_differs_and_exits_1(settings: Settings) -> None:
    ensure_stream_topics(settings)
    attempts = [
        encode_envelope(_attempt("a-1", "learner-a", correct=True)),
        encode_envelope(_attempt("b-1", "learner-b", correct=True)),
        encode_envelope(_attempt("b-2", "learner-b", correct=False)),
    ]
    records = [(e.key, e.value, e.headers) for e in attempts]
    right = rebuild(records, CatalogView()).states
    one_lost = rebuild(records[:2], CatalogView()).states
    key_a, key_b = attempts[0].key, attempts[1].key
    changelog = changelog_topic_name(settings.mastery.consumer_group, LEARNERS)
    producer = create_producer(settings.kafka)
    try:
        for encoded in attempts:
            producer.send(settings.kafka.topics.name("activity"), key=encoded.key,
                          value=encoded.value, headers=encoded.headers)  # fmt: skip
        producer.send(changelog, key=key_a, value=encode_state(right[key_a]))
        producer.send(changelog, key=key_b, value=encode_state(one_lost[key_b]))
        producer.flush()

        code, verdict = _replay(settings)
        assert code == 1 and verdict["equal"] is False
        assert verdict["events"] == 3 and verdict["learners"] == {"live": 2, "replayed": 2}
        differences = verdict["differences"]
        assert isinstance(differences, list)
        named = [(d["learner"], d["part"], d["name"]) for d in differences]
        assert (f"{TEST_TENANT}/learner-b", "skill", "fractions.add") in named
        assert all(learner == f"{TEST_TENANT}/learner-b" for learner, _, _ in named)

        producer.send(changelog, key=key_b, value=encode_state(right[key_b]))
        producer.flush()
        assert _replay(settings) == (
            0,
            {
                "equal": True,
                "events": 3,
                "invalid_events": 0,
                "learners": {"live": 2, "replayed": 2},
                "differences": [],
            },
        )
    finally:
        producer.close()
