"""moto's server, with every request handled under one lock.

moto's stock server handles requests on threads without locking its
in-memory backends, so two concurrent conditional writes to one DynamoDB
item (or S3 object) can both pass their condition. Real DynamoDB and S3
never allow that: a conditional write is atomic per item. Serialising the
requests restores that guarantee, which the lock's tests depend on.

With AWSFLOCK_MOTO_EXIT_WITH_PARENT=1 (as the tests start it), it also
exits when the process that started it dies.

Usage: moto-server.py -H 127.0.0.1 -p PORT   (same options as moto_server)
"""

import os
import threading
import time

from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_lock = threading.Lock()
_handle = DomainDispatcherApplication.__call__


def _serialised(self, environ, start_response):
    with _lock:
        # The whole response is built under the lock: moto has applied the
        # request by the time it returns.
        return list(_handle(self, environ, start_response))


DomainDispatcherApplication.__call__ = _serialised


def _exit_with_parent():
    # A test (or test command) that starts this server stops it by pid; if
    # that process dies first (killed on a time-out), the server goes too
    # rather than linger on its port.
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


if os.environ.get("AWSFLOCK_MOTO_EXIT_WITH_PARENT") == "1":
    threading.Thread(target=_exit_with_parent, daemon=True).start()

from moto.server import main  # noqa: E402

if __name__ == "__main__":
    main()
