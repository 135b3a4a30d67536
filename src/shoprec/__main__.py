"""``python -m shoprec``: the command line, as torchrun starts it (``torchrun ... -m shoprec``)."""

from shoprec.cli import main

if __name__ == "__main__":
    main()
