"""Prints a loopback port free now and not handed out before in this run: the ports given are
kept in the file named by the first argument. The kernel may give the same ephemeral port to
two binds in a row once the first is closed, and two listeners of one check on one port fail
it. Used by packaging.sh and load-common.sh."""
import os
import socket
import sys

given = sys.argv[1]
taken = set(open(given).read().split()) if os.path.exists(given) else set()
while True:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
    s.close()
    if port not in taken:
        break
with open(given, "a") as out:
    out.write(port + "\n")
print(port)
