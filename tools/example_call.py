"""The example call that `make run` prints: one learner's mastery, from the reporting service.

`python tools/example_call.py --target 127.0.0.1:50054 --token dev-admin-token stu-001`
"""

from __future__ import annotations

import argparse

import grpc

from trellis.common.pb.events.v1 import mastery_pb2
from trellis.common.pb.reporting.v1 import reporting_pb2, reporting_pb2_grpc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("learner_id", help="the learner's SIS id")
    parser.add_argument("--target", default="127.0.0.1:50054")
    parser.add_argument("--token", required=True)
    parser.add_argument("--tenant", default="demo-district")
    args = parser.parse_args()
    with grpc.insecure_channel(args.target) as channel:
        progress = reporting_pb2_grpc.ReportingServiceStub(channel).GetLearnerProgress(
            reporting_pb2.GetLearnerProgressRequest(
                tenant_id=args.tenant, learner_id=args.learner_id
            ),
            metadata=(("authorization", f"Bearer {args.token}"),),
            timeout=10,
        )
    print(f"learner {args.learner_id}: {len(progress.skills)} skills")
    for skill in progress.skills:
        level = mastery_pb2.MasteryLevel.Name(skill.level).removeprefix("MASTERY_LEVEL_").lower()
        print(
            f"  {skill.skill_id:24} P(mastered)={skill.p_mastered:.3f}"
            f"  {level}  ({skill.attempts} attempts)"
        )


if __name__ == "__main__":
    main()
