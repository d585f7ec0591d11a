"""What the examples do when no server answers: stop with one line that says how to start one, instead of waiting
without end (a BertClient without ``timeout`` waits forever) or printing a traceback."""
import sys
import urllib.error
from contextlib import contextmanager

TIMEOUT_MS = 10_000  # a running server answers these examples' small requests well within a second


def add_timeout_flag(parser) -> None:
    parser.add_argument("--timeout", type=int, default=TIMEOUT_MS,
                        help="milliseconds to wait for each answer of the server (default: %(default)s)")


@contextmanager
def hint_when_no_server(where: str, start: str = "make serve"):
    """Exit with status 1 and a one-line hint when the server at ``where`` does not answer (the client's
    BertTimeoutError is a TimeoutError; HTTP gets a refused connection)."""
    try:
        yield
    except (TimeoutError, ConnectionError, urllib.error.URLError) as e:
        sys.exit(f"no bert-serving server answered at {where} ({type(e).__name__}): start one first with `{start}` "
                 "in another terminal, or point --ip and the port flags at a running one")
