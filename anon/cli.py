"""``anon`` command line: sub-commands dispatch to their modules.

    anon anonymize [hydra overrides]     anonymise a dataset (default when only overrides are given)
    anon pipeline [hydra overrides]      fakes -> invert -> pair -> anonymize, each stage cached
    anon evaluate run_dir=DIR [...]      verify a finished run image by image (report.md, verification.jsonl)
    anon photos input=DIR output=DIR     anonymise every face of whole photos (same size and format out)
    anon download NAME|all [--dir DIR]   fetch and verify official checkpoints
"""
from __future__ import annotations

import sys

USAGE = __doc__


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv else ""
    if command in ("", "-h", "--help", "help"):
        print(USAGE)
        return 0
    if command == "download":
        from anon.weights import download_main

        return download_main(argv[1:])
    if command in ("pipeline", "evaluate", "photos"):
        sys.argv = [sys.argv[0], *argv[1:]]
        if command == "pipeline":
            from anon.stages.pipeline import pipeline_entry as entry
        elif command == "evaluate":
            from anon.stages.evaluate import evaluate_entry as entry
        else:
            from anon.photos_cli import photos_entry as entry
        entry()
        return 0
    if command == "anonymize" or "=" in command or command.startswith(("-", "+")):
        # Hydra reads sys.argv; Lightning's DDP relaunch re-runs this command with overrides only.
        rest = argv[1:] if command == "anonymize" else argv
        sys.argv = [sys.argv[0], *rest]
        from anon.run import hydra_entry

        hydra_entry()
        return 0
    print(f"anon: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
