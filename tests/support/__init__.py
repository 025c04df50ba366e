"""The test toolkit shared by every test package (real servers, waiting, ports, small catalogues).

waiting.eventually / eventually_sync   poll a condition the system reaches on its own; every
                                       timeout scaled by TANDTID_TEST_TIMEOUT_FACTOR
free_port                              a free TCP port on 127.0.0.1 (the one implementation,
                                       shared with the benchmarks in loadtest.redis_server)
live_server.LiveServer                 the in-thread server: build_server's app on real uvicorn
                                       in a thread of the test process, its clock movable
served.ServedProcess                   the subprocess server: the real ``tandtid serve``
redis_server.RedisServer               a real redis-server on a free port
webhook_receiver.receiving             a real HTTP server in this process that takes webhook deliveries
catalog                                small clinic catalogues and pinned times
"""

from __future__ import annotations

from loadtest.redis_server import free_port

__all__ = ["free_port"]
