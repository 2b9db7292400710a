"""A stand-in server process for lifecycle tests: real sockets, real children, real signals.

--delay S         become healthy after S seconds
--exit N          exit with status N after the delay instead of serving
--child           start a grandchild process that lingers (like vLLM's EngineCore)
--ignore-sigterm  ignore SIGTERM (the launcher must escalate to SIGKILL)
"""

import argparse
import http.server
import signal
import subprocess
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--delay", type=float, default=0.0)
parser.add_argument("--exit", type=int, default=None)
parser.add_argument("--child", action="store_true")
parser.add_argument("--ignore-sigterm", action="store_true")
args = parser.parse_args()

if args.ignore_sigterm:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if args.child:
    subprocess.Popen(
        [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"]
    )
print("starting", flush=True)
time.sleep(args.delay)
if args.exit is not None:
    print(f"ValueError: fake failure with exit {args.exit}", flush=True)
    sys.exit(args.exit)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *a):
        pass


print("Application startup complete.", flush=True)
http.server.HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()
