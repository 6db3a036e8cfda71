"""What the loop page says of a service whose consumer group cannot be described."""

from concurrent.futures import Future

import pytest

from streamml.console.status import StatusSampler
from streamml.settings import KafkaSettings

pytestmark = pytest.mark.unit


class SilentAdmin:
    """A broker that restarts: the group descriptions never come back."""

    def describe_consumer_groups(self, groups, request_timeout):
        return {group: Future() for group in groups}


def test_a_group_whose_description_never_comes_is_shown_unhealthy_not_an_error(monkeypatch):
    monkeypatch.setattr("streamml.console.status.TIMEOUT_S", 0.05)
    sampler = StatusSampler(KafkaSettings(), store=None, groups={"prep": "streamml-prep"}, interval_s=60)
    sampler._admin = SilentAdmin()
    [component] = sampler._services()
    assert (component.name, component.healthy) == ("prep", False)
    assert "no answer within 0.05s" in component.detail
