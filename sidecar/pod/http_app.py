"""The pod's HTTP application: sidecar/upstreams.py's HttpUpstream (JSON describing each
request, with the user Envoy's chain authenticated) as a process, on the pod's loopback.
Prints `listening on HOST:PORT`, then serves until SIGTERM or SIGINT."""

from __future__ import annotations

import signal

from sidecar.upstreams import HttpUpstream


def main() -> None:
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # taken by sigwait, also in the server
    app = HttpUpstream()
    print(f"listening on 127.0.0.1:{app.start()}", flush=True)
    signal.sigwait(stops)
    app.stop()


if __name__ == "__main__":
    main()
