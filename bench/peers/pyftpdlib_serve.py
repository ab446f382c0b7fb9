"""pyftpdlib for bench/compare.sh: one user, explicit FTPS offered, in the foreground.

pyftpdlib is a library; this is the launcher a deployment would write. Its DummyAuthorizer
compares plain-text passwords; to match the other peers, the password is given as an
MD5-crypt hash (FTP_BENCH_HASH) and checked with crypt(3). The stock single-process
asynchronous FTPServer (epoll) serves every session.

Usage: python3 pyftpdlib_serve.py --port P --home DIR --user NAME --passive-ports LO-HI
       --cert PEM --key PEM --max-cons N      (FTP_BENCH_HASH in the environment)
"""

import argparse
import logging
import os
import warnings

with warnings.catch_warnings():
    # crypt is deprecated (gone in Python 3.13), and it is the one that reads MD5-crypt.
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.handlers import TLS_FTPHandler
from pyftpdlib.log import config_logging
from pyftpdlib.servers import FTPServer


class CryptAuthorizer(DummyAuthorizer):
    """DummyAuthorizer whose stored passwords are crypt(3) hashes."""

    def validate_authentication(self, username, password, handler):
        stored = self.user_table.get(username, {}).get("pwd", "")
        if not stored or crypt.crypt(password, stored) != stored:
            raise AuthenticationFailed("Authentication failed.")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--passive-ports", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--max-cons", type=int, default=20000)
    args = parser.parse_args()

    authorizer = CryptAuthorizer()
    authorizer.add_user(args.user, os.environ["FTP_BENCH_HASH"], args.home, perm="elradfmwMT")

    # Errors only: the default INFO level logs every command of every session.
    config_logging(level=logging.ERROR)
    handler = TLS_FTPHandler
    handler.authorizer = authorizer
    handler.certfile = args.cert
    handler.keyfile = args.key
    handler.tls_control_required = False
    handler.tls_data_required = False
    low, high = (int(p) for p in args.passive_ports.split("-"))
    handler.passive_ports = range(low, high + 1)
    handler.timeout = 3600

    # A backlog for hundreds of clients connecting at once (the default is 100).
    server = FTPServer(("127.0.0.1", args.port), handler, backlog=1024)
    server.max_cons = args.max_cons
    server.max_cons_per_ip = 0
    print("pyftpdlib serving on 127.0.0.1:%d" % args.port, flush=True)
    server.serve_forever(handle_exit=True)


if __name__ == "__main__":
    main()
