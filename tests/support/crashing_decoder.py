"""The real decode worker, except that bytes starting with b"CRASH" kill it (SIGSEGV) and
bytes starting with b"SLOW" hold it for a second, then decode what follows.

DecodePool(2, size=(16, 16), command=[sys.executable, crashing_decoder.__file__])
"""

from __future__ import annotations

import os
import signal
import sys
import time

from trainer.data import decode_worker

_real = decode_worker.decode_image


def _crashing(data: bytes, **options: object):
    if bytes(data[:5]) == b"CRASH":
        os.kill(os.getpid(), signal.SIGSEGV)
    if bytes(data[:4]) == b"SLOW":
        time.sleep(1.0)
        data = data[4:]
    return _real(data, **options)


if __name__ == "__main__":
    decode_worker.decode_image = _crashing
    sys.exit(decode_worker.main())
