"""``bert-serving-keys NAME``: make a CURVE key pair, for a server or a client (docs/SECURITY.md).

Writes ``NAME.key`` (the public certificate: give it away) and ``NAME.key_secret`` (the secret one, mode 0600: it
never leaves the host that uses it) into ``-output`` (default: the current folder). It lives in the client package so
a host with only the client installed makes its own key pair and hands out only the public half.
Exit status: 0 written, 1 a file exists or cannot be written, 2 bad arguments.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

PROG = "bert-serving-keys"

__all__ = ["build_parser", "main", "make_key_pair"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Make a CURVE key pair: NAME.key (public) and NAME.key_secret (secret, mode 0600).")
    parser.add_argument("name", help="the key pair's name, e.g. 'server' or a client's name (letters, digits, -_.)")
    parser.add_argument("-output", "--output", type=Path, default=Path("."),
                        help="the folder to write into (created if missing; default: the current folder)")
    return parser


def make_key_pair(folder: Path, name: str) -> tuple[Path, Path]:
    """Write NAME.key and NAME.key_secret into ``folder``; FileExistsError rather than replace a key pair."""
    import zmq.auth

    folder.mkdir(parents=True, exist_ok=True)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    for path in (public, secret):
        if path.exists():
            raise FileExistsError(f"{path} exists: a key pair is never overwritten (clients may rely on it); remove it "
                                  "first or choose another name")
    previous = os.umask(0o077)  # the secret certificate is born private, never readable by others even briefly
    try:
        zmq.auth.create_certificates(folder, name)
    finally:
        os.umask(previous)
    os.chmod(public, 0o644)
    return public, secret


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.name or not all(char.isalnum() or char in "-_." for char in args.name) or args.name.startswith("."):
        parser.error(f"NAME must be letters, digits, '-', '_' or '.', got {args.name!r}")
    try:
        public, secret = make_key_pair(args.output, args.name)
    except OSError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"{PROG}: wrote {public} (public: hand it out) and {secret} (secret, mode 0600: keep it on this host)")


if __name__ == "__main__":
    main()
