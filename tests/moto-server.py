"""moto's server, as `moto_server` runs it, with three corrections to its MSK (kafka) API
that the tests of the deploy-time MSK check need, and one to DynamoDB. tests/with-aws runs this file with the
venv's Python; the arguments are moto_server's.

- moto writes a cluster's creationTime without a UTC offset ("2026-11-23T21:42:45.123456"),
  which is not the RFC 3339 date-time the MSK API answers, and the AWS SDK for Rust refuses
  the whole answer. Here it carries its "Z", as AWS writes it.
- moto's clusters stay CREATING for ever (a real one becomes ACTIVE after some minutes).
  Here a cluster created with the tag `moto:state` takes that state, so a test can have an
  ACTIVE cluster. Without the tag, clusters stay CREATING as in moto.
- moto answers a DescribeCluster(V2) of an unknown ARN with a 500 (a KeyError); AWS answers
  NotFoundException, as here.
- DynamoDB applies the writes to one item one at a time (an update is atomic, a condition is
  checked against the item as it is); moto's server handles requests on threads and reads,
  changes and stores an item without a lock, so two concurrent updates of one item could
  lose one (the likely cause of a conformance test of 16 concurrent context patches that
  failed once under load). Here every DynamoDB write holds one lock, as if each item's
  writes were serialized.
"""

import threading

from datetime import datetime, timezone

from moto.dynamodb.models import DynamoDBBackend
from moto.kafka import models
from moto.kafka.exceptions import NotFoundException
from moto.server import main

_init = models.FakeKafkaCluster.__init__


def _init_with_offset(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.creation_time = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _created_in_tagged_state(create):
    def wrapper(self, *args, **kwargs):
        result = create(self, *args, **kwargs)
        arn = result[0]
        state = (kwargs.get("tags") or {}).get("moto:state")
        if state:
            self.clusters[arn].state = state
        return result

    return wrapper


def _not_found_when_unknown(describe):
    def wrapper(self, cluster_arn, *args, **kwargs):
        if cluster_arn not in self.clusters:
            raise NotFoundException(f"The cluster {cluster_arn} does not exist.")
        return describe(self, cluster_arn, *args, **kwargs)

    return wrapper


models.FakeKafkaCluster.__init__ = _init_with_offset
models.KafkaBackend.describe_cluster = _not_found_when_unknown(models.KafkaBackend.describe_cluster)
models.KafkaBackend.describe_cluster_v2 = _not_found_when_unknown(
    models.KafkaBackend.describe_cluster_v2
)
models.KafkaBackend.create_cluster = _created_in_tagged_state(models.KafkaBackend.create_cluster)
models.KafkaBackend.create_cluster_v2 = _created_in_tagged_state(
    models.KafkaBackend.create_cluster_v2
)

_writes = threading.RLock()


def _serialized(write):
    def wrapper(*args, **kwargs):
        with _writes:
            return write(*args, **kwargs)

    return wrapper


for _name in ("put_item", "update_item", "delete_item", "transact_write_items"):
    setattr(DynamoDBBackend, _name, _serialized(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    main()
