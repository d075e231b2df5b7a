import os
import sys

import pytest

# Helper modules (cluster_helpers) sit beside this file.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cluster_helpers import Cluster  # noqa: E402


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start()
    except BaseException:
        c.stop()  # what did start must not outlive the test
        raise
    yield c
    c.stop()
