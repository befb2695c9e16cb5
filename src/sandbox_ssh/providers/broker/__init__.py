"""The provider of an unprivileged front: a client of the privileged broker.

``sandbox-ssh serve`` started as root uses it in each front; the broker
(``sandbox_ssh._broker``) runs the Docker provider as root and answers with data or
descriptors, so that the process reading clients' bytes holds neither root nor the
Docker socket, and no session's bytes pass through the broker.
"""

from ._client import HELPER_GONE
from ._provider import BrokerProvider

__all__ = ["HELPER_GONE", "BrokerProvider"]
