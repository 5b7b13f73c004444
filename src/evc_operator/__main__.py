"""`evc-operator [kopf run options]`: `kopf run` with this operator's handlers loaded.

The same as `kopf run ephemeral.py` from a checkout, for an installed package
(e.g. in the container image): `evc-operator --all-namespaces --liveness=...`.
"""

from __future__ import annotations

import sys

from kopf import cli


def main(argv: list[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["run"]:
        arguments = arguments[1:]  # `evc-operator run ...` reads as well
    cli.main(args=["run", "--module=evc_operator.handlers", *arguments],
             prog_name="evc-operator")


if __name__ == "__main__":
    main()
