"""``python -m autoenc`` and the ``autoenc`` command; the commands live in :mod:`autoenc.cli`."""
import sys


def main(argv=None):
    """Run the ``autoenc`` command line (``argv`` defaults to sys.argv[1:]). Returns the exit status."""
    from autoenc.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
