"""An adapter whose import never finishes: it says what it is doing, leaves
a progress line without its newline, and waits (``--adapter hang_import``)."""

import sys
import time

print("hang_import: loading the model", flush=True)
sys.stdout.write("progress: 10%")
sys.stdout.flush()
print("hang_import: waiting for the model server", file=sys.stderr, flush=True)


def wait_for_the_model_server() -> None:
    time.sleep(300)


wait_for_the_model_server()
