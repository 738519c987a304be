"""`python -m trellis.mastery worker | fit | evaluate`.

worker: the Faust worker and the mastery read API in one process.
fit --train FILE [--out params.json] [--version V]: fit a versioned parameter set (BKT per skill
    by EM, item difficulties, calibration) and write it as `ModelParameters` JSON.
evaluate --train FILE --test FILE [--json] [--no-pybkt] [--bootstrap N] [--truth FILE]:
    next-attempt AUC, RMSE and ECE of Trellis's model and of pyBKT fitted on the same training
    file (DESIGN.md §8); with --truth, P(mastered) against the simulator's true state.
publish --params FILE --tenant T [--target HOST:PORT] --token-file FILE: send a fitted set to
    the catalog through ingest's UpsertCatalog (target: the ingest address of the settings).
replay [--json]: rebuild all mastery state from the activity topic into fresh state and compare
    it with the live state (the table changelogs); exit status 0 if equal, 1 if not.

Wiring only: settings are read once here and passed down.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

from trellis.common.follower import CompactedTopicFollower, decoded
from trellis.common.grpc.server import GrpcServer, ServiceBinding, create_server
from trellis.common.logging import configure_logging, get_logger
from trellis.common.metrics import start_metrics_server
from trellis.common.pb.events.v1 import catalog_pb2
from trellis.common.pb.mastery.v1 import mastery_pb2_grpc
from trellis.common.pseudonym import Pseudonymizer
from trellis.common.roster import RosterView, roster_applier
from trellis.common.settings import GrpcTlsSettings, Settings
from trellis.mastery.adapters.grpc import SERVICE_NAME, MasteryServicer
from trellis.mastery.adapters.mastery_topic import MasteryTopic
from trellis.mastery.adapters.partition_ends import PartitionEnds
from trellis.mastery.adapters.peers import Peers
from trellis.mastery.adapters.placement import attach, canonical_url
from trellis.mastery.catalog import CatalogView
from trellis.mastery.fitting import Progress
from trellis.mastery.stream.app import create_stream, ensure_stream_topics
from trellis.mastery.stream.worker import MasteryWorker

#: How long the worker waits for the catalog and roster replicas before consuming activity.
REPLICA_WAIT_S = 30.0


def worker(settings: Settings) -> None:
    log = get_logger("trellis.mastery")
    server_settings = settings.services.mastery
    created = ensure_stream_topics(settings)
    if created:
        log.info("changelog topics created", topics=created)
    catalog, roster = CatalogView(), RosterView()
    # Every worker holds the whole catalog and roster (what a Faust GlobalTable would do: its
    # recovery stalled on this broker); the worker waits for them before consuming activity and
    # serving reads (the roster scopes reads and lists classes).
    followers = [
        CompactedTopicFollower(
            settings.kafka, "catalog", decoded(catalog_pb2.CatalogRecord, catalog.apply)
        ),
        CompactedTopicFollower(settings.kafka, "roster", roster_applier(roster)),
    ]
    for follower in followers:
        follower.start()
    for follower in followers:
        if not follower.caught_up.wait(REPLICA_WAIT_S):
            log.warning(
                "replica not caught up: starting with what has arrived",
                topic=follower.name,
                waited_s=REPLICA_WAIT_S,
            )
    # The gRPC address goes to the group with the assignment: reads are routed by it.
    stream = create_stream(
        settings,
        catalog=catalog,
        canonical_url=canonical_url(server_settings.host, server_settings.port),
    )
    topics = settings.kafka.topics
    servicer = MasteryServicer(
        stream.service,
        Pseudonymizer(settings.pseudonym.all_keys()),
        attach(
            stream.app, topics.name("activity"), topics.partitions, PartitionEnds(settings.kafka)
        ),
        Peers(settings.grpc_tls),
        MasteryTopic(settings.kafka),
        roster,
    )

    def grpc_server() -> GrpcServer:
        binding = ServiceBinding(
            SERVICE_NAME, mastery_pb2_grpc.add_MasteryServiceServicer_to_server, servicer
        )
        return create_server(
            server_settings,
            settings.auth.all_tokens(),
            [binding],
            tls=settings.grpc_tls,
            certificates=settings.auth.all_certificates(),
        )

    metrics_port = start_metrics_server(server_settings.metrics_port, server_settings.host)
    log.info(
        "mastery worker starting",
        group=settings.mastery.consumer_group,
        grpc_port=server_settings.port,
        metrics_port=metrics_port,
        data_dir=str(settings.mastery.data_dir),
    )
    MasteryWorker(stream.app, grpc_server).execute_from_commandline()


@contextmanager
def _progress_bar() -> Iterator[Progress]:
    """A rich progress bar on stderr: one task per stage reported by the fitting code."""
    from rich.console import Console
    from rich.progress import Progress as Bar

    with Bar(console=Console(stderr=True), transient=False) as bar:
        tasks: dict[str, object] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)  # type: ignore[arg-type]

        yield report


def fit(train: Path, out: Path | None, version: str | None) -> None:
    from trellis.mastery.dataset import read_attempts
    from trellis.mastery.fitting import fit_model
    from trellis.mastery.model_parameters import to_json

    # Same training file, same version: a refit of the same data names the same set.
    version = version or "fit-" + hashlib.sha256(train.read_bytes()).hexdigest()[:12]
    data = read_attempts(train)
    print(
        f"{train}: {data.attempts} attempts, {len(data.users)} learners, "
        f"{len(data.skills)} skills, {len(data.items)} items",
        file=sys.stderr,
    )
    with _progress_bar() as progress:
        fitted = fit_model(data, version, progress=progress)
    text = to_json(fitted.model)
    if out is None:
        print(text)
    else:
        out.write_text(text + "\n")
        print(f"parameter set {version} written to {out}", file=sys.stderr)


def evaluate(
    train: Path, test: Path, as_json: bool, pybkt: bool, bootstrap: int, truth: Path | None
) -> None:
    from trellis.mastery.evaluation import evaluate as run

    with _progress_bar() as progress:
        result = run(
            train,
            test,
            references=("pybkt",) if pybkt else (),
            bootstrap=bootstrap,
            truth=truth,
            progress=progress,
            on_stage=lambda stage: print(stage, file=sys.stderr),
        )
    document = result.as_dict()
    if as_json:
        print(json.dumps(document))
        return
    print(f"{'model':<20} {'auc':>7} {'rmse':>7} {'ece':>7} {'n':>9}  auc 95% ci")
    for name, row in document.items():
        ci = row.get("auc_ci95")
        interval = "" if ci is None else f"[{ci[0]:.4f}, {ci[1]:.4f}]"
        print(
            f"{name:<20} {row['auc']:>7.4f} {row['rmse']:>7.4f} {row['ece']:>7.4f} "
            f"{row['n']:>9}  {interval}"
        )


def publish(params: Path, tenant: str, target: str, token_file: Path, tls: GrpcTlsSettings) -> None:
    import asyncio

    from trellis.mastery.adapters.publish import publish as send
    from trellis.mastery.model_parameters import from_json

    model = from_json(params.read_text())
    token = token_file.read_text().strip()
    result = asyncio.run(send(target, token, tenant, model, tls=tls))
    status = "stored" if result.status == 1 else "already stored"
    print(f"parameter set {model.version} {status} for tenant {tenant}", file=sys.stderr)


def replay(settings: Settings, as_json: bool) -> int:
    from trellis.mastery.adapters.log_reader import read_live_state, replay_log
    from trellis.mastery.replay import compare, report, report_lines

    # Logs (stdout by default) go to stderr while it runs: stdout carries only the verdict.
    with redirect_stdout(sys.stderr), _progress_bar() as progress:
        rebuilt = replay_log(settings, progress)
        live = read_live_state(settings)
    differences = compare(live.states, rebuilt.states, live.erased, rebuilt.erased)
    document = report(rebuilt, len(live.states), differences)
    print(json.dumps(document) if as_json else "\n".join(report_lines(document)))
    return 0 if document["equal"] else 1


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m trellis.mastery",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("worker", help="consume activity, keep mastery state, serve the read API")
    fit_cmd = commands.add_parser("fit", help="fit a versioned parameter set from a file")
    fit_cmd.add_argument("--train", type=Path, required=True)
    fit_cmd.add_argument("--out", type=Path, help="write the JSON here (default: stdout)")
    fit_cmd.add_argument("--version", help="version name (default: fit-<sha256 of the file>)")
    eval_cmd = commands.add_parser("evaluate", help="next-attempt prediction, vs pyBKT")
    eval_cmd.add_argument("--train", type=Path, required=True)
    eval_cmd.add_argument("--test", type=Path, required=True)
    eval_cmd.add_argument("--json", action="store_true", help="one JSON document on stdout")
    eval_cmd.add_argument("--no-pybkt", action="store_true", help="skip the pyBKT reference")
    eval_cmd.add_argument(
        "--bootstrap", type=int, default=0, help="resamples of test learners for AUC intervals"
    )
    eval_cmd.add_argument(
        "--truth",
        type=Path,
        help="the simulator's truth.csv: compare P(mastered) with the true state",
    )
    pub_cmd = commands.add_parser("publish", help="send a fitted set to the catalog (ingest)")
    pub_cmd.add_argument("--params", type=Path, required=True, help="JSON written by fit")
    pub_cmd.add_argument("--tenant", required=True)
    pub_cmd.add_argument("--target", help="ingest HOST:PORT (default: from the settings)")
    pub_cmd.add_argument("--token-file", type=Path, required=True, help="bearer token of ingest")
    replay_cmd = commands.add_parser("replay", help="rebuild state from the log, compare to live")
    replay_cmd.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args(argv)

    if args.command == "fit":
        fit(args.train, args.out, args.version)
        return
    if args.command == "evaluate":
        evaluate(args.train, args.test, args.json, not args.no_pybkt, args.bootstrap, args.truth)
        return
    settings = Settings()
    if args.command == "publish":
        ingest = settings.services.ingest
        publish(args.params, args.tenant, args.target or f"{ingest.host}:{ingest.port}",
                args.token_file, settings.grpc_tls)  # fmt: skip
        return
    configure_logging(settings.log_level)
    if args.command == "replay":
        sys.exit(replay(settings, args.json))
    if args.command == "worker":
        worker(settings)


if __name__ == "__main__":
    main(sys.argv[1:])
